//! Polling before a network thread parks.
//!
//! A network runtime with nothing to run parks in epoll_wait. What ends the wait comes
//! from another thread (the sequencer answering a write, the load generator's next
//! request on a loopback socket), and on a VM waking a thread parked on another CPU is an
//! inter-processor interrupt: ~0.04 ms each on this project's 2-core VM, paid twice or
//! more per single-client request. So before parking, the runtime polls for up to
//! [`POLL_BEFORE_PARK`], yielding the CPU between polls, for the two things that would
//! wake it: a task woken from another thread (tokio's injection queue) and a readable
//! socket of this thread (an epoll set of its own that every accepted connection and
//! listener joins, see [`watch`]). Either ends the poll at once, so polling never delays
//! work that is ready; it only spends otherwise idle CPU.
//!
//! Everything here is per thread: [`install`] on a network thread before its runtime runs,
//! [`watch`] from that runtime's tasks, [`poll_before_park`] as its `on_thread_park` hook.
//! On any failure the poll is skipped and the runtime parks as it would without it.

use std::cell::OnceCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long a network thread polls before it parks: long enough to see a single-client
/// write's answer come back from the sequencer (one WAL write + fdatasync, ~0.15-0.3 ms
/// here) without being woken.
pub const POLL_BEFORE_PARK: Duration = Duration::from_micros(250);

thread_local! {
    /// This thread's readiness set (an epoll instance), once installed.
    static READY_SET: OnceCell<OwnedFd> = const { OnceCell::new() };
}

fn ready_set() -> Option<RawFd> {
    READY_SET.with(|set| set.get().map(AsRawFd::as_raw_fd))
}

/// Gives the calling thread its readiness set. Idempotent; on failure the thread simply
/// never polls.
pub fn install() {
    if ready_set().is_some() {
        return;
    }
    // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        log::debug!(
            "network thread parks without polling: epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: fd is a new epoll instance that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    READY_SET.with(|set| drop(set.set(owned)));
}

/// Adds a socket (a connection or a listener of this thread) to the readiness set. The
/// kernel drops it from the set when the socket is closed. Errors are ignored: a socket
/// missing from the set only means its data does not end a poll early.
pub fn watch(socket: &impl AsRawFd) {
    let Some(set) = ready_set() else {
        return;
    };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: 0,
    };
    // SAFETY: both fds are open (the socket is borrowed, the set is this thread's own);
    // the event is a valid epoll_event the kernel only reads.
    unsafe {
        libc::epoll_ctl(set, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event);
    }
}

/// Why a poll before parking ended.
#[derive(Debug, PartialEq, Eq)]
enum PollEnd {
    /// A task was woken from another thread.
    Woken,
    /// A watched socket is readable (or closed by its peer).
    Readable,
    /// Nothing happened within the bound.
    TimedOut,
    /// This thread has no readiness set or runs no runtime: nothing was polled.
    NotPolled,
}

/// The runtime's park hook: returns as soon as a task was woken from another thread or a
/// watched socket is readable, or after [`POLL_BEFORE_PARK`].
pub fn poll_before_park() {
    poll(POLL_BEFORE_PARK);
}

fn poll(budget: Duration) -> PollEnd {
    let (Some(set), Ok(runtime)) = (ready_set(), tokio::runtime::Handle::try_current()) else {
        return PollEnd::NotPolled;
    };
    let metrics = runtime.metrics();
    let deadline = Instant::now() + budget;
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // Bounded by the deadline; each round is two cheap syscalls.
    loop {
        if metrics.global_queue_depth() > 0 {
            return PollEnd::Woken;
        }
        // SAFETY: the set is open; room for one event, which is all we ask for.
        if unsafe { libc::epoll_wait(set, &mut event, 1, 0) } != 0 {
            return PollEnd::Readable;
        }
        if Instant::now() >= deadline {
            return PollEnd::TimedOut;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The poll ends on a readable watched socket and on a task woken from another
    /// thread, and runs to its bound otherwise.
    #[test]
    fn poll_ends_on_readable_socket_or_remote_wake() {
        // A long bound: the early ends must come from the events, not from the clock.
        let bound = Duration::from_secs(30);
        assert_eq!(poll(bound), PollEnd::NotPolled, "no runtime, no set");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        assert_eq!(poll(bound), PollEnd::NotPolled, "no set installed");
        install();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        watch(&server);

        assert_eq!(poll(Duration::from_millis(1)), PollEnd::TimedOut);

        // Loopback delivery is done when write returns: the socket is readable now.
        client.write_all(b"x").unwrap();
        assert_eq!(poll(bound), PollEnd::Readable);

        // Closing the socket takes it out of the set.
        drop(server);
        assert_eq!(poll(Duration::from_millis(1)), PollEnd::TimedOut);

        // A task spawned from another thread waits in the injection queue.
        let handle = runtime.handle().clone();
        std::thread::spawn(move || drop(handle.spawn(async {})))
            .join()
            .unwrap();
        assert_eq!(poll(bound), PollEnd::Woken);
    }
}
