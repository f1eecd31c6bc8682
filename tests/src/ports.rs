//! Loopback ports for tests that start servers.

/// `n` distinct loopback ports no other test of this process has been given, each free
/// when handed out.
///
/// Binding port 0 and releasing it is not enough: the kernel gives out the same ephemeral
/// ports again, to another test's `free_ports` or to any outgoing connection (etcdctl, peer
/// links), before the server binds the port — a server then fails with "address already in
/// use" or, worse, the harness talks to somebody else's listener. So ports come from a
/// window below the kernel's ephemeral range (`ip_local_port_range`), which outgoing
/// connections never use, walked by one process-wide counter so two tests never get the
/// same port; the starting point depends on the PID so test binaries run one after another
/// do not start on the ports the previous one just used. A port that something else on the
/// machine holds is skipped. Every port handed out also keeps the port above it free and
/// unused by other tests: corekv serves its binary protocol on the client port + 1 by default.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static WINDOW: OnceLock<(u32, u32)> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let &(low, size) = WINDOW.get_or_init(|| {
        let (low, size) = port_window();
        NEXT.store(
            std::process::id().wrapping_mul(7919) % size & !1,
            Ordering::Relaxed,
        );
        (low, size)
    });
    let mut ports = Vec::with_capacity(n);
    let mut tried = 0u32;
    while ports.len() < n {
        assert!(
            tried < size / 2,
            "no free loopback port left in {low}..{}",
            low + size
        );
        tried += 1;
        let port = (low + NEXT.fetch_add(2, Ordering::Relaxed) % size) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            ports.push(port);
        }
    }
    ports
}

/// `(first port, port count)` of the window `free_ports` walks: the 16384 ports below the
/// ephemeral range, or the ports above it when the range starts too low for that.
fn port_window() -> (u32, u32) {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok());
    let (eph_low, eph_high) = match (it.next(), it.next()) {
        (Some(a), Some(b)) if a <= b => (a, b),
        _ => (32768, 60999),
    };
    if eph_low >= 1024 + 4096 {
        let low = eph_low.saturating_sub(16384).max(1024);
        (low, (eph_low - low) & !1)
    } else if eph_high + 4096 <= 65535 {
        (eph_high + 1, (65534 - eph_high) & !1)
    } else {
        (20000, 10000) // the whole range is ephemeral; the bind check still skips holders
    }
}
