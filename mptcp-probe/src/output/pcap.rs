//! Header-only pcapng traces of the packets the observer reported: network and TCP headers (with
//! options), never payload, readable by tshark and Wireshark.

use std::{borrow::Cow, collections::HashMap, fs::File, io::BufWriter, path::Path, time::Duration};

use anyhow::Context as _;
use mptcp_probe_common::event::{direction, PacketEvent, HEADER_BYTES};
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink,
};

pub struct PcapTrace {
    path: std::path::PathBuf,
    writer: PcapNgWriter<BufWriter<File>>,
    /// ifindex → interface id in the file.
    interfaces: HashMap<u32, u32>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, to turn kernel timestamps into wall-clock time.
    clock_offset_ns: i128,
    pub packets: u64,
}

/// pcapng EPB flags: direction bits (01 inbound, 10 outbound).
fn direction_flags(d: u8) -> u32 {
    if d == direction::EGRESS {
        0b10
    } else {
        0b01
    }
}

impl PcapTrace {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot write the trace file {}", path.display()))?;
        let writer = PcapNgWriter::new(BufWriter::new(file)).context("writing the pcapng section header")?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            interfaces: HashMap::new(),
            clock_offset_ns: crate::host::clock::realtime_offset_ns(),
            packets: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn interface(&mut self, ifindex: u32, name: &str) -> anyhow::Result<u32> {
        if let Some(id) = self.interfaces.get(&ifindex) {
            return Ok(*id);
        }
        let id = self.interfaces.len() as u32;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: HEADER_BYTES as u32,
            options: vec![InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string()))],
        };
        self.writer.write_pcapng_block(idb).context("writing the trace")?;
        self.interfaces.insert(ifindex, id);
        Ok(id)
    }

    /// Appends the headers a packet event carries.
    pub fn write(&mut self, p: &PacketEvent, iface: &str) -> anyhow::Result<()> {
        let n = (p.headers_len as usize).min(HEADER_BYTES);
        if n == 0 {
            return Ok(());
        }
        let id = self.interface(p.flow.ifindex, iface)?;
        let wall = (p.header.ts_ns as i128 + self.clock_offset_ns).max(0) as u128;
        let epb = EnhancedPacketBlock {
            interface_id: id,
            timestamp: Duration::from_nanos(wall as u64),
            original_len: (p.ip_len as u32).max(n as u32),
            data: Cow::Borrowed(&p.headers[..n]),
            options: vec![EnhancedPacketOption::Flags(direction_flags(p.direction))],
        };
        self.writer.write_pcapng_block(epb).context("writing the trace")?;
        self.packets += 1;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut w = self.writer.into_inner();
        w.flush().context("flushing the trace")?;
        Ok(())
    }
}
