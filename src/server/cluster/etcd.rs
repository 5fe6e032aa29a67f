//! STUB (lead's local placeholder; replaced by helper etcd's file at merge).
#![allow(unused)]
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub lease_ttl: Duration,
    pub timeout: Duration,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NameRecord {
    pub user: String,
    pub key_fp: String,
    pub node: String,
    pub conn: u64,
    pub since: String,
}
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub node: String,
    pub link: String,
    pub started: String,
}
#[derive(Debug)]
pub enum PublishError {
    Taken,
    Unavailable(String),
}
pub enum Health {
    Ok,
    Unavailable {
        since: std::time::SystemTime,
        why: String,
    },
}
#[derive(Clone)]
pub struct ClusterRegistry {}
impl ClusterRegistry {
    pub fn start(
        settings: EtcdSettings,
        me: Member,
        cancel: CancellationToken,
    ) -> Result<ClusterRegistry, String> {
        todo!()
    }
    pub async fn publish(
        &self,
        name: &str,
        port: u16,
        rec: NameRecord,
    ) -> Result<Option<NameRecord>, PublishError> {
        todo!()
    }
    pub async fn withdraw(&self, name: &str, port: u16, rec: &NameRecord) {
        todo!()
    }
    pub fn publish_later(&self, name: &str, port: u16, rec: NameRecord) {
        todo!()
    }
    pub fn lookup(&self, name: &str, port: u16) -> Option<NameRecord> {
        todo!()
    }
    pub fn member(&self, node: &str) -> Option<Member> {
        todo!()
    }
    pub fn members(&self) -> Vec<Member> {
        todo!()
    }
    pub fn names(&self) -> Vec<(String, u16, NameRecord)> {
        todo!()
    }
    pub fn health(&self) -> Health {
        todo!()
    }
    pub fn lost(&self) -> tokio::sync::broadcast::Receiver<(String, u16, NameRecord)> {
        todo!()
    }
}
