//! STUB (lead's local placeholder; replaced by helper link's files at merge).
#![allow(unused)]
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_ssh::driver::ChannelStream;
use warren_ssh::ssh_key::{PrivateKey, PublicKey};
pub struct NodeKeys {
    pub node: String,
    pub key: PrivateKey,
    pub peers: HashMap<String, PublicKey>,
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReachRequest {
    pub name: String,
    pub port: u16,
    pub user: String,
    pub from_node: String,
    pub correlation: String,
    pub originator: String,
    pub originator_port: u32,
}
pub struct PendingReach {}
impl PendingReach {
    pub fn accept(self) -> ChannelStream {
        todo!()
    }
    pub fn reject(self, code: u32, why: &str) {
        todo!()
    }
}
pub async fn serve(
    listener: TcpListener,
    keys: Arc<NodeKeys>,
    on_reach: Arc<dyn Fn(ReachRequest, PendingReach) + Send + Sync>,
    cancel: CancellationToken,
) {
    todo!()
}
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub node: String,
    pub addr: String,
    pub state: String,
}
pub struct Links {}
impl Links {
    pub fn new(keys: Arc<NodeKeys>, cancel: CancellationToken) -> Links {
        todo!()
    }
    pub async fn open(
        &self,
        node: &str,
        addr: &str,
        req: ReachRequest,
    ) -> Result<ChannelStream, String> {
        todo!()
    }
    pub fn status(&self) -> Vec<LinkStatus> {
        todo!()
    }
}
