//! The local tun/tap device, through tun-rs: `tunN`/`tapN` for a unit number, or the next
//! free one for `any`, without packet-information headers (the wire format adds its own),
//! brought up as it is created. It exists while warren holds it (not persistent), as with ssh.

use crate::config::values::TunUnit;
use std::io;

/// Larger than any MTU a tun or tap device takes (64 KiB plus an ethernet header).
pub const MAX_FRAME: usize = 65_536 + 18;

pub struct Device {
    dev: tun_rs::AsyncDevice,
    name: String,
}

impl Device {
    pub fn open(unit: TunUnit, ethernet: bool) -> Result<Device, String> {
        let prefix = if ethernet { "tap" } else { "tun" };
        let mut b = tun_rs::DeviceBuilder::new().layer(if ethernet {
            tun_rs::Layer::L2
        } else {
            tun_rs::Layer::L3
        });
        if let TunUnit::Unit(n) = unit {
            b = b.name(format!("{prefix}{n}"));
        }
        let dev = b.build_async().map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (creating a tunnel device needs root or CAP_NET_ADMIN)"
            } else {
                ""
            };
            format!(
                "cannot open the local {prefix} device {}: {e}{hint}",
                unit.name()
            )
        })?;
        let name = dev
            .name()
            .unwrap_or_else(|_| format!("{prefix}{}", unit.name()));
        Ok(Device { dev, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf).await
    }

    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.dev.send(packet).await
    }
}
