//! A build without the `cluster` feature: the same names, none of which can exist, so
//! the callers need no feature gates of their own.

use super::config::ClusterSection;
use super::link::ReachRequest;
use super::names::NameRecord;
use std::path::Path;
use warren_ssh::driver::ChannelStream;

/// Uninhabited: no cluster can be started without the feature.
pub enum Cluster {}
pub enum Prepared {}
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Cluster { from: Option<String> },
    LocalOnly { why: String },
}
pub enum Located {
    Here,
    Elsewhere { record: NameRecord, link: String },
    Gone { record: NameRecord },
}

impl Prepared {
    pub fn new(_: &ClusterSection, _: &Path) -> anyhow::Result<Prepared> {
        anyhow::bail!(
            "this warrend was built without the `cluster` feature: [cluster] cannot be used"
        )
    }
}

impl Prepared {
    pub fn link_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match *self {}
    }
    pub fn public_line(&self) -> &str {
        match *self {}
    }
}

impl Cluster {
    pub fn start(
        _: &ClusterSection,
        _: &dyn Fn(&Path) -> std::path::PathBuf,
        prepared: Prepared,
        _: &std::sync::Arc<crate::server::state::Shared>,
        _: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<std::sync::Arc<Cluster>> {
        match prepared {}
    }
    pub fn node(&self) -> &str {
        match *self {}
    }
    pub async fn publish(
        &self,
        _: &str,
        _: u16,
        _: &str,
        _: &str,
        _: u64,
    ) -> Result<Published, String> {
        match *self {}
    }
    pub fn withdraw(&self, _: &str, _: u16, _: u64) {
        match *self {}
    }
    pub fn locate(&self, _: &str, _: u16) -> Located {
        match *self {}
    }
    pub async fn open_remote(
        &self,
        _: &NameRecord,
        _: &str,
        _: ReachRequest,
    ) -> Result<ChannelStream, String> {
        match *self {}
    }
    pub fn correlation(&self) -> String {
        match *self {}
    }
}
