//! Member and cluster IDs derived the way etcd derives them.
//!
//! These mimic etcd's `NewMember` and `genID` so the IDs corekv reports look
//! familiar to etcd operators (with etcd's defaults the single member is
//! `8e9e05c52164694d` in cluster `cdf818194e3a8c32`, as in etcd). Bit-exact
//! equality with etcd is not a requirement: etcd hashes the URL strings as
//! written, corekv hashes their canonical form.

use super::url::Url;

/// Member ID: the first 8 bytes (big-endian) of SHA-1 over the sorted peer
/// URL strings concatenated, followed by the cluster token.
pub fn member_id(peer_urls: &[Url], token: &str) -> u64 {
    let mut urls: Vec<String> = peer_urls.iter().map(Url::to_string).collect();
    urls.sort();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    sha1_prefix(&bytes)
}

/// Cluster ID: the first 8 bytes (big-endian) of SHA-1 over the sorted member
/// IDs, each written as 8 big-endian bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_prefix(&bytes)
}

fn sha1_prefix(bytes: &[u8]) -> u64 {
    let digest = sha1_smol::Sha1::from(bytes).digest().bytes();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}
