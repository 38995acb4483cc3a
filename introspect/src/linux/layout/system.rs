//! System-wide counters: run queues and CPU times, the timekeeper, `cpuinfo_x86`, meminfo and swap.

use super::{LayoutError, Resolver, TypeInfo};

/// Per-CPU run queues and CPU time counters behind `/proc/{stat,loadavg,uptime}`.
#[derive(Debug, Clone)]
pub struct CpuStatLayout {
    pub rq_nr_running: u64,
    pub rq_nr_switches: u64,
    pub rq_nr_iowait: u64,
    pub rq_curr: u64,
    pub rq_idle: u64,
    /// `kernel_cpustat.cpustat[]` indices in `/proc/stat` column order: user nice system
    /// idle iowait irq softirq steal guest guest_nice.
    pub cpustat: u64,
    pub columns: [u64; 10],
    /// NO_HZ idle accounting (`struct tick_sched`), absent in kernels without it.
    pub tick_idle: Option<TickIdleLayout>,
    pub pid_ns_idr_next: u64,
}

#[derive(Debug, Clone)]
pub struct TickIdleLayout {
    pub idle_entrytime: u64,
    pub idle_sleeptime: u64,
    pub iowait_sleeptime: u64,
}

impl CpuStatLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/stat, loadavg and uptime",
        };
        let mut columns = [0; 10];
        for (column, name) in columns.iter_mut().zip([
            "CPUTIME_USER",
            "CPUTIME_NICE",
            "CPUTIME_SYSTEM",
            "CPUTIME_IDLE",
            "CPUTIME_IOWAIT",
            "CPUTIME_IRQ",
            "CPUTIME_SOFTIRQ",
            "CPUTIME_STEAL",
            "CPUTIME_GUEST",
            "CPUTIME_GUEST_NICE",
        ]) {
            *column = r.index("cpu_usage_stat", name)?;
        }
        let tick_idle = (|| {
            Some(TickIdleLayout {
                idle_entrytime: types.member_offset("tick_sched", "idle_entrytime")?,
                idle_sleeptime: types.member_offset("tick_sched", "idle_sleeptime")?,
                iowait_sleeptime: types.member_offset("tick_sched", "iowait_sleeptime")?,
            })
        })();
        Ok(Self {
            rq_nr_running: r.off("rq", "nr_running")?,
            rq_nr_switches: r.off("rq", "nr_switches")?,
            rq_nr_iowait: r.off("rq", "nr_iowait")?,
            rq_curr: r.off("rq", "curr")?,
            rq_idle: r.off("rq", "idle")?,
            cpustat: r.off("kernel_cpustat", "cpustat")?,
            columns,
            tick_idle,
            pid_ns_idr_next: r.off("pid_namespace", "idr.idr_next")?,
        })
    }
}

/// The timekeeper: where boot time and the clocks since boot are kept.
#[derive(Debug, Clone)]
pub struct TimekeeperLayout {
    /// Offset of `struct timekeeper` inside the anonymous `tk_core` (after its seqcount).
    pub in_core: u64,
    pub mono_base: u64,
    pub mono_xtime_nsec: u64,
    pub mono_shift: u64,
    pub offs_real: u64,
    pub offs_boot: u64,
}

impl TimekeeperLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the boot time and uptime",
        };
        // `tk_core` is `struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }`,
        // an anonymous type: the timekeeper (8-byte aligned) follows the seqcount.
        let seq = r.struct_size("seqcount_raw_spinlock")?;
        Ok(Self {
            in_core: seq.div_ceil(8).saturating_mul(8),
            mono_base: r.off("timekeeper", "tkr_mono.base")?,
            mono_xtime_nsec: r.off("timekeeper", "tkr_mono.xtime_nsec")?,
            mono_shift: r.off("timekeeper", "tkr_mono.shift")?,
            offs_real: r.off("timekeeper", "offs_real")?,
            offs_boot: r.off("timekeeper", "offs_boot")?,
        })
    }
}

/// `struct cpuinfo_x86`: each field as (offset, size), since their widths vary by release.
#[derive(Debug, Clone)]
pub struct CpuInfoLayout {
    pub family: (u64, u64),
    pub model: (u64, u64),
    pub stepping: (u64, u64),
    pub virt_bits: (u64, u64),
    pub phys_bits: (u64, u64),
    pub capability: (u64, u64),
    pub vendor_id: (u64, u64),
    pub model_id: (u64, u64),
    pub cache_size: (u64, u64),
    pub cache_alignment: (u64, u64),
    pub loops_per_jiffy: (u64, u64),
    pub microcode: (u64, u64),
    pub phys_proc_id: (u64, u64),
    pub core_id: (u64, u64),
    pub booted_cores: (u64, u64),
    pub apicid: (u64, u64),
    pub clflush_size: (u64, u64),
    /// `initial apicid`, `cpuid level` and `TLB size`: their lines are left out when the
    /// kernel lacks the field.
    pub initial_apicid: Option<(u64, u64)>,
    pub cpuid_level: Option<(u64, u64)>,
    pub tlbsize: Option<(u64, u64)>,
}

impl CpuInfoLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/cpuinfo",
        };
        let f = |m: &str| Ok::<_, LayoutError>((r.off("cpuinfo_x86", m)?, r.size("cpuinfo_x86", m)?));
        // 6.1 spells the package id `phys_proc_id`; 6.7+ keep it in `topo.pkg_id`.
        let either = |a: &str, b: &str| f(a).or_else(|_| f(b));
        Ok(Self {
            family: f("x86")?,
            model: f("x86_model")?,
            stepping: f("x86_stepping")?,
            virt_bits: f("x86_virt_bits")?,
            phys_bits: f("x86_phys_bits")?,
            capability: f("x86_capability")?,
            vendor_id: f("x86_vendor_id")?,
            model_id: f("x86_model_id")?,
            cache_size: f("x86_cache_size")?,
            cache_alignment: f("x86_cache_alignment")?,
            loops_per_jiffy: f("loops_per_jiffy")?,
            microcode: f("microcode")?,
            phys_proc_id: either("phys_proc_id", "topo.pkg_id")?,
            core_id: either("cpu_core_id", "topo.core_id")?,
            booted_cores: f("booted_cores")?,
            apicid: either("apicid", "topo.apicid")?,
            clflush_size: f("x86_clflush_size")?,
            initial_apicid: either("initial_apicid", "topo.initial_apicid").ok(),
            cpuid_level: f("cpuid_level").ok(),
            tlbsize: f("x86_tlbsize").ok(),
        })
    }
}

/// The counters `/proc/meminfo` is computed from.
#[derive(Debug, Clone)]
pub struct MemLayout {
    /// `node_stat_item` and `zone_stat_item` indices by enumerator name; an item this kernel
    /// lacks is absent (and so is the meminfo line that shows it).
    pub node_items: std::collections::BTreeMap<&'static str, u64>,
    pub zone_items: std::collections::BTreeMap<&'static str, u64>,
    pub pgdat_node_zones: u64,
    pub zone_size: u64,
    pub zones_per_node: u64,
    pub zone_watermark_low: u64,
    pub zone_watermark_boost: u64,
    pub percpu_counter_count: u64,
    pub percpu_counter_counters: u64,
    pub hstate: Option<HstateLayout>,
    pub blockdev_inodes: Option<BlockdevLayout>,
}

#[derive(Debug, Clone)]
pub struct HstateLayout {
    pub size: u64,
    pub order: u64,
    pub nr_huge_pages: u64,
    pub free_huge_pages: u64,
    pub resv_huge_pages: u64,
    pub surplus_huge_pages: u64,
}

/// Block device inodes, whose page caches are meminfo's `Buffers`.
#[derive(Debug, Clone)]
pub struct BlockdevLayout {
    pub sb_inodes: u64,
    pub inode_sb_list: u64,
    pub inode_mapping: u64,
    pub mapping_nrpages: u64,
}

pub const NODE_STAT_ITEMS: [&str; 24] = [
    "NR_FILE_PAGES",
    "NR_SWAPCACHE",
    "NR_INACTIVE_ANON",
    "NR_ACTIVE_ANON",
    "NR_INACTIVE_FILE",
    "NR_ACTIVE_FILE",
    "NR_UNEVICTABLE",
    "NR_SLAB_RECLAIMABLE_B",
    "NR_SLAB_UNRECLAIMABLE_B",
    "NR_KERNEL_MISC_RECLAIMABLE",
    "NR_FILE_DIRTY",
    "NR_WRITEBACK",
    "NR_ANON_MAPPED",
    "NR_FILE_MAPPED",
    "NR_SHMEM",
    "NR_KERNEL_STACK_KB",
    "NR_PAGETABLE",
    "NR_SECONDARY_PAGETABLE",
    "NR_WRITEBACK_TEMP",
    "NR_ANON_THPS",
    "NR_SHMEM_THPS",
    "NR_SHMEM_PMDMAPPED",
    "NR_FILE_THPS",
    "NR_FILE_PMDMAPPED",
];

pub const ZONE_STAT_ITEMS: [&str; 4] = ["NR_FREE_PAGES", "NR_MLOCK", "NR_BOUNCE", "NR_FREE_CMA_PAGES"];

impl MemLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/meminfo",
        };
        let items = |ty: &str, names: &[&'static str]| {
            names
                .iter()
                .filter_map(|n| Some((*n, r.index(ty, n).ok()?)))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let zone_size = r.struct_size("zone")?;
        let zones_len = r.size("pglist_data", "node_zones")?;
        Ok(Self {
            node_items: items("node_stat_item", &NODE_STAT_ITEMS),
            zone_items: items("zone_stat_item", &ZONE_STAT_ITEMS),
            pgdat_node_zones: r.off("pglist_data", "node_zones")?,
            zone_size,
            zones_per_node: zones_len.checked_div(zone_size).unwrap_or(0),
            zone_watermark_low: r
                .off("zone", "_watermark")?
                .wrapping_add(8 * r.index("zone_watermarks", "WMARK_LOW")?),
            zone_watermark_boost: r.off("zone", "watermark_boost")?,
            percpu_counter_count: r.off("percpu_counter", "count")?,
            percpu_counter_counters: r.off("percpu_counter", "counters")?,
            hstate: (|| {
                Some(HstateLayout {
                    size: types.struct_size("hstate")?,
                    order: types.member_offset("hstate", "order")?,
                    nr_huge_pages: types.member_offset("hstate", "nr_huge_pages")?,
                    free_huge_pages: types.member_offset("hstate", "free_huge_pages")?,
                    resv_huge_pages: types.member_offset("hstate", "resv_huge_pages")?,
                    surplus_huge_pages: types.member_offset("hstate", "surplus_huge_pages")?,
                })
            })(),
            blockdev_inodes: (|| {
                Some(BlockdevLayout {
                    sb_inodes: types.member_offset("super_block", "s_inodes")?,
                    inode_sb_list: types.member_offset("inode", "i_sb_list")?,
                    inode_mapping: types.member_offset("inode", "i_mapping")?,
                    mapping_nrpages: types.member_offset("address_space", "nrpages")?,
                })
            })(),
        })
    }
}

/// `struct swap_info_struct` as `/proc/swaps` prints it.
#[derive(Debug, Clone)]
pub struct SwapLayout {
    pub flags: u64,
    pub prio: u64,
    pub pages: u64,
    pub inuse_pages: u64,
    pub swap_file: u64,
    pub file_path: u64,
    pub file_inode: u64,
    pub inode_mode: u64,
}

impl SwapLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "/proc/swaps",
        };
        Ok(Self {
            flags: r.off("swap_info_struct", "flags")?,
            prio: r.off("swap_info_struct", "prio")?,
            pages: r.off("swap_info_struct", "pages")?,
            inuse_pages: r.off("swap_info_struct", "inuse_pages")?,
            swap_file: r.off("swap_info_struct", "swap_file")?,
            file_path: r.off("file", "f_path")?,
            file_inode: r.off("file", "f_inode")?,
            inode_mode: r.off("inode", "i_mode")?,
        })
    }
}
