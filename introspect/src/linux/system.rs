//! System-wide state behind `/proc/{meminfo,cpuinfo,uptime,loadavg,stat,swaps}`, computed as
//! fs/proc/meminfo.c, arch/x86/kernel/cpu/proc.c, fs/proc/{uptime,loadavg,stat}.c and
//! mm/swapfile.c compute it, from the kernel's global and per-CPU counters.

use super::extract::{ExtractError, KernelView};
use super::layout::{CpuInfoLayout, CpuStatLayout, MemLayout, MountLayout, SwapLayout, TimekeeperLayout};
use super::reader::KernelReader;
use super::snapshot::{Cpu, Swap, SystemState};

type Result<T> = std::result::Result<T, ExtractError>;

/// No kernel dormouse reads supports more CPUs (`NR_CPUS` is at most 8192).
const MAX_CPUS: u32 = 8192;
/// `MAX_NUMNODES` with the largest `NODES_SHIFT` (10).
const MAX_NODES: u32 = 1024;
/// `MAX_SWAPFILES` is 32 minus the special swap types: never more than 32.
const MAX_SWAPFILES: u32 = 32;
/// `HUGE_MAX_HSTATE` is 2 on x86; a few more cover other configurations.
const MAX_HSTATES: u32 = 8;
const PAGE_SHIFT: u32 = 12;
const NSEC_PER_USER_TICK: u64 = 10_000_000;
/// `FIXED_1 / 200`: `get_avenrun()` rounds the loads by this before `/proc/loadavg` prints them.
const LOADAVG_ROUNDING: u64 = (1 << 11) / 200;
/// `VMALLOC_SIZE_TB` of x86-64 with 4- and 5-level paging.
const VMALLOC_TB_4LEVEL: u64 = 32;
const VMALLOC_TB_5LEVEL: u64 = 12800;
/// `SWP_USED | SWP_WRITEOK`: flags of an anonymous enum in swap.h, stable since 2.6.
const SWP_USED_WRITEOK: u64 = 0b11;
const S_IFMT: u16 = 0o170000;
const S_IFBLK: u16 = 0o060000;

impl KernelView<'_> {
    /// Every part of [`SystemState`] that can be read; the rest stays empty with a warning.
    pub fn system(&self, warnings: &mut Vec<String>) -> SystemState {
        let hz = self.hz();
        let mut s = SystemState {
            hz,
            ..Default::default()
        };
        let mut warn = |what: &str, e: ExtractError| warnings.push(format!("{what}: {e}"));
        match self.meminfo() {
            Ok(m) => s.meminfo = m,
            Err(e) => warn("/proc/meminfo", e),
        }
        match self.cpuinfo(hz) {
            Ok(c) => s.cpus = c,
            Err(e) => warn("/proc/cpuinfo", e),
        }
        let clocks = self.clocks();
        match &clocks {
            Ok((uptime, btime)) => {
                s.uptime_ns = Some(*uptime);
                s.boot_time = Some(*btime);
            }
            Err(e) => warn("uptime and boot time", ExtractError::Invalid(e.to_string())),
        }
        match self.cpu_counters(clocks.ok().map(|(uptime, _)| uptime)) {
            Ok(c) => {
                s.idle_ns = c.idle_ns;
                s.nr_running = Some(c.nr_running);
                s.context_switches = Some(c.nr_switches);
                s.procs_blocked = Some(c.nr_iowait);
                s.cpu_times = c.cpu_times;
                s.last_pid = Some(c.last_pid);
            }
            Err(e) => warn("/proc/stat and loadavg counters", e),
        }
        match self.loadavg() {
            Ok((avenrun, nr_threads, forks)) => {
                s.avenrun = Some(avenrun);
                s.nr_threads = Some(nr_threads);
                s.forks = Some(forks);
            }
            Err(e) => warn("/proc/loadavg", e),
        }
        match self.swaps() {
            Ok(v) => s.swaps = v,
            Err(e) => warn("/proc/swaps", e),
        }
        s
    }

    fn u64_at(&self, name: &str) -> Result<u64> {
        Ok(self.reader().u64(self.symbol(name)?, name)?)
    }

    fn u32_at(&self, name: &str) -> Result<u32> {
        Ok(self.reader().u32(self.symbol(name)?, name)?)
    }

    /// The CPUs set in cpumask `name` (`__cpu_online_mask`, `__cpu_possible_mask`).
    fn cpu_mask(&self, name: &str) -> Result<Vec<u32>> {
        let nr = self.u32_at("nr_cpu_ids")?.min(MAX_CPUS);
        let bits = self
            .reader()
            .bytes(self.symbol(name)?, nr.div_ceil(64) as usize * 8, name)?;
        Ok((0..nr)
            .filter(|c| bits[(c / 8) as usize] & (1 << (c % 8)) != 0)
            .collect())
    }

    fn per_cpu_offset(&self, cpu: u32) -> Result<u64> {
        let offsets = self.symbol("__per_cpu_offset")?;
        Ok(self
            .reader()
            .u64(offsets.wrapping_add(u64::from(cpu) * 8), "__per_cpu_offset[cpu]")?)
    }

    /// `per_cpu_ptr(&name, cpu)`: per-CPU symbols are offsets into each CPU's area.
    fn per_cpu(&self, name: &str, cpu: u32) -> Result<u64> {
        Ok(self.per_cpu_offset(cpu)?.wrapping_add(self.symbol(name)?))
    }

    /// `/proc/meminfo`, line by line as `meminfo_proc_show()` prints it for this kernel.
    fn meminfo(&self) -> Result<Vec<(String, u64)>> {
        let l = MemLayout::resolve(self.types)?;
        let r = self.reader();
        // global_{node,zone}_page_state(): the global atomics, negative read as 0.
        let stat = |array: &str, index: Option<&u64>| -> Result<Option<u64>> {
            let Some(i) = index else { return Ok(None) };
            let v = r.u64(self.symbol(array)?.wrapping_add(i * 8), array)?;
            Ok(Some((v as i64).max(0) as u64))
        };
        let node = |item: &str| stat("vm_node_stat", l.node_items.get(item));
        let zone = |item: &str| stat("vm_zone_stat", l.zone_items.get(item));
        let need = |v: Option<u64>, item: &str| {
            v.ok_or_else(|| ExtractError::Invalid(format!("this kernel's vmstat items have no {item}")))
        };
        let node_req = |item: &str| -> Result<u64> { need(node(item)?, item) };
        let opt_sym = |name: &str| self.symbols.address(name);
        let read_opt = |name: &str| -> Result<Option<u64>> {
            opt_sym(name)
                .map(|a| r.u64(a, name).map(|v| (v as i64).max(0) as u64))
                .transpose()
                .map_err(Into::into)
        };

        let totalram = self.u64_at("_totalram_pages")?;
        let freeram = need(zone("NR_FREE_PAGES")?, "NR_FREE_PAGES")?;
        let bufferram = self.blockdev_pages(&l)?;
        let swapcache = node("NR_SWAPCACHE")?.unwrap_or(0);
        let total_swap = (self.u64_at("total_swap_pages")? as i64).max(0) as u64;
        let free_swap = (self.u64_at("nr_swap_pages")? as i64).max(0) as u64;
        let lru: Vec<u64> = [
            "NR_INACTIVE_ANON",
            "NR_ACTIVE_ANON",
            "NR_INACTIVE_FILE",
            "NR_ACTIVE_FILE",
            "NR_UNEVICTABLE",
        ]
        .iter()
        .map(|i| node_req(i))
        .collect::<Result<_>>()?;
        let (inactive_anon, active_anon, inactive_file, active_file, unevictable) =
            (lru[0], lru[1], lru[2], lru[3], lru[4]);
        let sreclaimable = node_req("NR_SLAB_RECLAIMABLE_B")?;
        let sunreclaim = node_req("NR_SLAB_UNRECLAIMABLE_B")?;
        let misc_reclaimable = node("NR_KERNEL_MISC_RECLAIMABLE")?.unwrap_or(0);
        let cached = (node_req("NR_FILE_PAGES")? as i64)
            .wrapping_sub(swapcache as i64)
            .wrapping_sub(bufferram as i64)
            .max(0) as u64;

        // si_mem_available().
        let wmark_low = self.low_watermarks(&l)?;
        let reserve = self.u64_at("totalreserve_pages")?;
        let mut available = (freeram as i64).wrapping_sub(reserve as i64);
        let pagecache = active_file.wrapping_add(inactive_file);
        available = available.wrapping_add(pagecache.wrapping_sub((pagecache / 2).min(wmark_low)) as i64);
        let reclaimable = sreclaimable.wrapping_add(misc_reclaimable);
        available = available.wrapping_add(reclaimable.wrapping_sub((reclaimable / 2).min(wmark_low)) as i64);
        let available = available.max(0) as u64;

        let hstates = self.hstates(&l)?;
        // vm_commit_limit().
        let overcommit_kbytes = self.u64_at("sysctl_overcommit_kbytes")?;
        let commit_limit = if overcommit_kbytes != 0 {
            overcommit_kbytes >> (PAGE_SHIFT - 10)
        } else {
            let huge = hstates.iter().fold(0u64, |sum, h| sum.wrapping_add(h.nr << h.order));
            totalram
                .saturating_sub(huge)
                .wrapping_mul(u64::from(self.u32_at("sysctl_overcommit_ratio")?))
                / 100
        }
        .wrapping_add(total_swap);
        // vm_memory_committed(): percpu_counter_sum_positive(), the shared count plus each
        // online CPU's unfolded part.
        let counter = self.symbol("vm_committed_as")?;
        let mut committed = r.u64(counter.wrapping_add(l.percpu_counter_count), "vm_committed_as.count")? as i64;
        let parts = r.u64(
            counter.wrapping_add(l.percpu_counter_counters),
            "vm_committed_as.counters",
        )?;
        for cpu in self.cpu_mask("__cpu_online_mask")? {
            let offset = self.per_cpu_offset(cpu)?;
            committed = committed.wrapping_add(i64::from(
                r.i32(parts.wrapping_add(offset), "vm_committed_as per-CPU part")?,
            ));
        }
        let committed = committed.max(0) as u64;

        let mut out: Vec<(String, u64)> = Vec::new();
        pages(&mut out, "MemTotal", totalram);
        pages(&mut out, "MemFree", freeram);
        pages(&mut out, "MemAvailable", available);
        pages(&mut out, "Buffers", bufferram);
        pages(&mut out, "Cached", cached);
        pages(&mut out, "SwapCached", swapcache);
        pages(&mut out, "Active", active_anon.wrapping_add(active_file));
        pages(&mut out, "Inactive", inactive_anon.wrapping_add(inactive_file));
        pages(&mut out, "Active(anon)", active_anon);
        pages(&mut out, "Inactive(anon)", inactive_anon);
        pages(&mut out, "Active(file)", active_file);
        pages(&mut out, "Inactive(file)", inactive_file);
        pages(&mut out, "Unevictable", unevictable);
        pages(&mut out, "Mlocked", need(zone("NR_MLOCK")?, "NR_MLOCK")?);
        pages(&mut out, "SwapTotal", total_swap);
        pages(&mut out, "SwapFree", free_swap);
        if let Some(pool) = read_opt("zswap_pool_total_size")? {
            out.push(("Zswap".into(), pool >> 10));
            let stored = r.u32(self.symbol("zswap_stored_pages")?, "zswap_stored_pages")?;
            out.push(("Zswapped".into(), u64::from(stored) << (PAGE_SHIFT - 10)));
        }
        pages(&mut out, "Dirty", node_req("NR_FILE_DIRTY")?);
        pages(&mut out, "Writeback", node_req("NR_WRITEBACK")?);
        pages(&mut out, "AnonPages", node_req("NR_ANON_MAPPED")?);
        pages(&mut out, "Mapped", node_req("NR_FILE_MAPPED")?);
        pages(&mut out, "Shmem", node_req("NR_SHMEM")?);
        pages(&mut out, "KReclaimable", reclaimable);
        pages(&mut out, "Slab", sreclaimable.wrapping_add(sunreclaim));
        pages(&mut out, "SReclaimable", sreclaimable);
        pages(&mut out, "SUnreclaim", sunreclaim);
        out.push(("KernelStack".into(), node_req("NR_KERNEL_STACK_KB")?));
        pages(&mut out, "PageTables", node_req("NR_PAGETABLE")?);
        if let Some(v) = node("NR_SECONDARY_PAGETABLE")? {
            pages(&mut out, "SecPageTables", v);
        }
        pages(&mut out, "NFS_Unstable", 0);
        pages(&mut out, "Bounce", zone("NR_BOUNCE")?.unwrap_or(0));
        pages(&mut out, "WritebackTmp", node_req("NR_WRITEBACK_TEMP")?);
        pages(&mut out, "CommitLimit", commit_limit);
        pages(&mut out, "Committed_AS", committed);
        let l5 = opt_sym("__pgtable_l5_enabled")
            .map(|a| r.u32(a, "__pgtable_l5_enabled"))
            .transpose()?
            .unwrap_or(0);
        let vmalloc_tb = if l5 != 0 { VMALLOC_TB_5LEVEL } else { VMALLOC_TB_4LEVEL };
        // VMALLOC_END is inclusive: the total is one byte short of the whole range.
        out.push(("VmallocTotal".into(), ((vmalloc_tb << 40) - 1) >> 10));
        pages(&mut out, "VmallocUsed", self.u64_at("nr_vmalloc_pages")?);
        pages(&mut out, "VmallocChunk", 0);
        // pcpu_nr_pages(): populated pages times units.
        let percpu = u64::from(self.u32_at("pcpu_nr_populated")?) * u64::from(self.u32_at("pcpu_nr_units")?);
        pages(&mut out, "Percpu", percpu);
        if let Some(v) = read_opt("num_poisoned_pages")? {
            pages(&mut out, "HardwareCorrupted", v);
        }
        // The THP items are always in the enum; the lines only with CONFIG_TRANSPARENT_HUGEPAGE.
        let thp = opt_sym("transparent_hugepage_flags").is_some();
        for (name, item) in [
            ("AnonHugePages", "NR_ANON_THPS"),
            ("ShmemHugePages", "NR_SHMEM_THPS"),
            ("ShmemPmdMapped", "NR_SHMEM_PMDMAPPED"),
            ("FileHugePages", "NR_FILE_THPS"),
            ("FilePmdMapped", "NR_FILE_PMDMAPPED"),
        ] {
            if let Some(v) = node(item)?.filter(|_| thp) {
                pages(&mut out, name, v);
            }
        }
        // totalcma_pages exists without CONFIG_CMA too; cma_alloc() only with it.
        if let Some(cma) = read_opt("totalcma_pages")?.filter(|_| opt_sym("cma_alloc").is_some()) {
            pages(&mut out, "CmaTotal", cma);
            pages(&mut out, "CmaFree", zone("NR_FREE_CMA_PAGES")?.unwrap_or(0));
        }
        // hugetlb_report_meminfo(): counts for the default size, then bytes of all sizes.
        if !hstates.is_empty() {
            let default = self.u32_at("default_hstate_idx")? as usize;
            if let Some(h) = hstates.get(default) {
                out.push(("HugePages_Total".into(), h.nr));
                out.push(("HugePages_Free".into(), h.free));
                out.push(("HugePages_Rsvd".into(), h.resv));
                out.push(("HugePages_Surp".into(), h.surplus));
                out.push(("Hugepagesize".into(), 4u64 << h.order));
            }
            let bytes = hstates
                .iter()
                .fold(0u64, |sum, h| sum.wrapping_add((h.nr << h.order) << PAGE_SHIFT));
            out.push(("Hugetlb".into(), bytes >> 10));
        }
        // arch_report_meminfo() (x86): the direct map's pages by size.
        if let Some(a) = opt_sym("direct_pages_count") {
            let count = |level: u64| r.u64(a.wrapping_add(level * 8), "direct_pages_count");
            out.push(("DirectMap4k".into(), count(1)? << 2));
            out.push(("DirectMap2M".into(), count(2)? << 11));
            let gbpages = opt_sym("direct_gbpages")
                .map(|a| r.u32(a, "direct_gbpages"))
                .transpose()?
                .unwrap_or(0);
            if gbpages != 0 {
                out.push(("DirectMap1G".into(), count(3)? << 20));
            }
        }
        Ok(out)
    }

    /// `nr_blockdev_pages()`: page cache of the block device inodes (meminfo's Buffers).
    fn blockdev_pages(&self, l: &MemLayout) -> Result<u64> {
        let Some(b) = &l.blockdev_inodes else {
            return Err(ExtractError::Invalid("no layout for block device inodes".into()));
        };
        let r = self.reader();
        let sb = r.u64(self.symbol("blockdev_superblock")?, "blockdev_superblock")?;
        let mut total = 0u64;
        for inode in r.list(sb.wrapping_add(b.sb_inodes), b.inode_sb_list, "blockdev s_inodes")? {
            let mapping = r.u64(inode.wrapping_add(b.inode_mapping), "inode.i_mapping")?;
            total = total.wrapping_add(r.u64(mapping.wrapping_add(b.mapping_nrpages), "address_space.nrpages")?);
        }
        Ok(total)
    }

    /// Sum of every zone's low watermark (`low_wmark_pages()`), for MemAvailable.
    fn low_watermarks(&self, l: &MemLayout) -> Result<u64> {
        let r = self.reader();
        let node_data = self.symbol("node_data")?;
        let nodes = self.u32_at("nr_node_ids")?.min(MAX_NODES);
        let mut sum = 0u64;
        for nid in 0..u64::from(nodes) {
            let pgdat = r.u64(node_data.wrapping_add(nid * 8), "node_data[nid]")?;
            if pgdat == 0 {
                continue;
            }
            for z in 0..l.zones_per_node.min(8) {
                let zone = pgdat
                    .wrapping_add(l.pgdat_node_zones)
                    .wrapping_add(z.wrapping_mul(l.zone_size));
                sum = sum
                    .wrapping_add(r.u64(zone.wrapping_add(l.zone_watermark_low), "zone._watermark[WMARK_LOW]")?)
                    .wrapping_add(r.u64(zone.wrapping_add(l.zone_watermark_boost), "zone.watermark_boost")?);
            }
        }
        Ok(sum)
    }

    /// The registered huge page sizes (`hstates[0..hugetlb_max_hstate]`).
    fn hstates(&self, l: &MemLayout) -> Result<Vec<Hstate>> {
        let (Some(h), Some(base)) = (&l.hstate, self.symbols.address("hstates")) else {
            return Ok(Vec::new());
        };
        let r = self.reader();
        let count = self.u32_at("hugetlb_max_hstate")?.min(MAX_HSTATES);
        (0..u64::from(count))
            .map(|i| {
                let at = |off: u64| base.wrapping_add(i.wrapping_mul(h.size)).wrapping_add(off);
                Ok(Hstate {
                    // An order past 30 is not a page size; keep shifts defined.
                    order: r.u32(at(h.order), "hstate.order")?.min(30),
                    nr: r.u64(at(h.nr_huge_pages), "hstate.nr_huge_pages")?,
                    free: r.u64(at(h.free_huge_pages), "hstate.free_huge_pages")?,
                    resv: r.u64(at(h.resv_huge_pages), "hstate.resv_huge_pages")?,
                    surplus: r.u64(at(h.surplus_huge_pages), "hstate.surplus_huge_pages")?,
                })
            })
            .collect()
    }

    /// `/proc/cpuinfo` fields of each online CPU from its `cpu_info` (`struct cpuinfo_x86`).
    fn cpuinfo(&self, hz: Option<u64>) -> Result<Vec<Cpu>> {
        let l = CpuInfoLayout::resolve(self.types)?;
        let r = self.reader();
        let cap_names = self.flag_names("x86_cap_flags")?;
        let bug_names = self.flag_names("x86_bug_flags")?;
        // arch_freq_get_on_cpu() without APERF/MPERF samples falls back to cpu_khz.
        let khz = self.u32_at("cpu_khz")?;
        let mut cpus = Vec::new();
        for cpu in self.cpu_mask("__cpu_online_mask")? {
            let c = self.per_cpu("cpu_info", cpu)?;
            let f = |(off, size): (u64, u64), what: &str| uint(&r, c.wrapping_add(off), size, what);
            let opt = |field: Option<(u64, u64)>, what: &str| field.map(|l| f(l, what)).transpose();
            let string =
                |(off, size): (u64, u64), what: &str| r.inline_string(c.wrapping_add(off), size as usize, what);
            let caps = r.bytes(
                c.wrapping_add(l.capability.0),
                l.capability.1.min(1024) as usize,
                "cpuinfo_x86.x86_capability",
            )?;
            let has = |bit: usize| caps.get(bit / 8).is_some_and(|b| b & (1 << (bit % 8)) != 0);
            let ncap = cap_names.len();
            let flags: Vec<String> = cap_names
                .iter()
                .enumerate()
                .filter_map(|(bit, name)| name.as_ref().filter(|_| has(bit)).cloned())
                .collect();
            let bugs = bug_names
                .iter()
                .enumerate()
                .filter_map(|(bit, name)| name.as_ref().filter(|_| has(ncap + bit)).cloned())
                .collect();
            let lpj = f(l.loops_per_jiffy, "cpuinfo_x86.loops_per_jiffy")?;
            let cache_size = f(l.cache_size, "cpuinfo_x86.x86_cache_size")? as u32;
            let core_map = self.per_cpu("cpu_core_map", cpu).and_then(|a| self.cpumask_weight(a));
            cpus.push(Cpu {
                processor: cpu,
                vendor_id: string(l.vendor_id, "cpuinfo_x86.x86_vendor_id")?,
                family: f(l.family, "cpuinfo_x86.x86")? as u32,
                model: f(l.model, "cpuinfo_x86.x86_model")? as u32,
                model_name: string(l.model_id, "cpuinfo_x86.x86_model_id")?,
                stepping: f(l.stepping, "cpuinfo_x86.x86_stepping")? as u32,
                microcode: Some(f(l.microcode, "cpuinfo_x86.microcode")? as u32),
                mhz: has(X86_FEATURE_TSC).then_some(f64::from(khz) / 1000.0),
                // show_cpuinfo() prints the cache size only when it is known (non-zero).
                cache_size_kb: (cache_size != 0).then_some(cache_size),
                physical_id: Some(f(l.phys_proc_id, "cpuinfo_x86 package id")? as u32),
                siblings: core_map.ok(),
                core_id: Some(f(l.core_id, "cpuinfo_x86 core id")? as u32),
                cpu_cores: Some(f(l.booted_cores, "cpuinfo_x86.booted_cores")? as u32),
                apicid: Some(f(l.apicid, "cpuinfo_x86 apicid")? as u32),
                initial_apicid: opt(l.initial_apicid, "cpuinfo_x86 initial apicid")?.map(|v| v as u32),
                cpuid_level: opt(l.cpuid_level, "cpuinfo_x86.cpuid_level")?.map(|v| v as i32),
                // show_cpuinfo() prints the TLB size only when it is known (positive).
                tlb_size: opt(l.tlbsize, "cpuinfo_x86.x86_tlbsize")?
                    .map(|v| v as i32)
                    .filter(|v| *v > 0),
                flags,
                bugs,
                // "%lu.%02lu" of lpj/(500000/HZ) and (lpj/(5000/HZ)) % 100.
                bogomips: hz
                    .filter(|hz| *hz > 0 && *hz <= 5000)
                    .map(|hz| (lpj / (500_000 / hz)) as f64 + ((lpj / (5000 / hz)) % 100) as f64 / 100.0),
                clflush_size: Some(f(l.clflush_size, "cpuinfo_x86.x86_clflush_size")? as u32),
                cache_alignment: Some(f(l.cache_alignment, "cpuinfo_x86.x86_cache_alignment")? as u32),
                address_sizes: Some((
                    f(l.phys_bits, "cpuinfo_x86.x86_phys_bits")? as u32,
                    f(l.virt_bits, "cpuinfo_x86.x86_virt_bits")? as u32,
                )),
            });
        }
        Ok(cpus)
    }

    /// A `const char *[]` of feature names (`x86_cap_flags`), sized by the symbol table;
    /// `None` for bits without a name.
    fn flag_names(&self, name: &str) -> Result<Vec<Option<String>>> {
        const MAX_FLAGS: u64 = 32 * 64;
        let r = self.reader();
        let start = self.symbol(name)?;
        let end = self.symbols.next_after(start).unwrap_or(start);
        // Whole 32-bit words only: padding after the array must not shift the bug bits.
        let count = (end.saturating_sub(start) / 8 / 32 * 32).min(MAX_FLAGS);
        if count == 0 {
            return Err(ExtractError::Invalid(format!("cannot size {name}")));
        }
        let ptrs = r.bytes(start, count as usize * 8, name)?;
        ptrs.chunks_exact(8)
            .map(|p| match u64::from_le_bytes(p.try_into().unwrap_or([0; 8])) {
                0 => Ok(None),
                p => Ok(Some(r.c_string(p, 64, name)?)),
            })
            .collect()
    }

    /// `cpumask_weight()` of the `cpumask_var_t` at `addr`: a pointer to the mask with
    /// CPUMASK_OFFSTACK (distros' 8192-CPU builds), the mask itself otherwise. Only the
    /// former has an out-of-line `alloc_cpumask_var_node()`.
    fn cpumask_weight(&self, addr: u64) -> Result<u32> {
        let r = self.reader();
        let nr = self.u32_at("nr_cpu_ids")?.min(MAX_CPUS);
        let mask = if self.symbols.address("alloc_cpumask_var_node").is_some() {
            r.u64(addr, "cpumask_var_t")?
        } else {
            addr
        };
        let bits = r.bytes(mask, nr.div_ceil(64) as usize * 8, "cpumask")?;
        Ok((0..nr).filter(|c| bits[(c / 8) as usize] & (1 << (c % 8)) != 0).count() as u32)
    }

    /// Time since boot (`ktime_get_boottime()` at the last timekeeping update) and the boot
    /// time in epoch seconds (`getboottime64()`: `offs_real - offs_boot`).
    fn clocks(&self) -> Result<(u64, u64)> {
        let l = TimekeeperLayout::resolve(self.types)?;
        let r = self.reader();
        let tk = self.symbol("tk_core")?.wrapping_add(l.in_core);
        let at = |off: u64| tk.wrapping_add(off);
        let base = r.u64(at(l.mono_base), "timekeeper.tkr_mono.base")?;
        let xtime_nsec = r.u64(at(l.mono_xtime_nsec), "timekeeper.tkr_mono.xtime_nsec")?;
        let shift = r.u32(at(l.mono_shift), "timekeeper.tkr_mono.shift")?;
        let offs_real = r.u64(at(l.offs_real), "timekeeper.offs_real")? as i64;
        let offs_boot = r.u64(at(l.offs_boot), "timekeeper.offs_boot")? as i64;
        // Cycles since the last update cannot be read from a stopped clock: at most a tick
        // (or one idle period on a tickless CPU) is missing.
        let monotonic = base.wrapping_add(xtime_nsec.checked_shr(shift).unwrap_or(0));
        let uptime = monotonic.wrapping_add(offs_boot as u64);
        let btime = offs_real.wrapping_sub(offs_boot).div_euclid(1_000_000_000);
        Ok((uptime, btime.max(0) as u64))
    }

    /// Per-CPU run queue and CPU time counters: `/proc/stat` lines, nr_running,
    /// context switches, blocked tasks, the idle time of `/proc/uptime` and the last pid.
    fn cpu_counters(&self, now: Option<u64>) -> Result<CpuCounters> {
        let l = CpuStatLayout::resolve(self.types)?;
        let r = self.reader();
        let possible = self.cpu_mask("__cpu_possible_mask")?;
        let online = self.cpu_mask("__cpu_online_mask")?;
        let nohz = match (&l.tick_idle, self.symbols.address("tick_nohz_active")) {
            (Some(t), Some(a)) if r.bytes(a, 1, "tick_nohz_active")?[0] != 0 => Some(t),
            _ => None,
        };
        let mut c = CpuCounters {
            last_pid: 0,
            idle_ns: Some(0),
            ..Default::default()
        };
        for &cpu in &possible {
            let rq = self.per_cpu("runqueues", cpu)?;
            let is_online = online.contains(&cpu);
            let nr_iowait = r.u32(rq.wrapping_add(l.rq_nr_iowait), "rq.nr_iowait")?;
            c.nr_switches = c
                .nr_switches
                .wrapping_add(r.u64(rq.wrapping_add(l.rq_nr_switches), "rq.nr_switches")?);
            c.nr_iowait = c.nr_iowait.wrapping_add(u64::from(nr_iowait));
            if is_online {
                c.nr_running = c
                    .nr_running
                    .wrapping_add(u64::from(r.u32(rq.wrapping_add(l.rq_nr_running), "rq.nr_running")?));
            }
            let stat = self.per_cpu("kernel_cpustat", cpu)?.wrapping_add(l.cpustat);
            let mut ns = [0u64; 10];
            for (v, index) in ns.iter_mut().zip(&l.columns) {
                *v = r.u64(stat.wrapping_add(index * 8), "kernel_cpustat.cpustat")?;
            }
            // get_idle_time()/get_iowait_time(): a tickless online CPU keeps its idle time
            // in tick_sched, plus the idle period under way (ts->idle_active; taken here as
            // the CPU running its idle task), counted as iowait while tasks wait for I/O.
            if let (Some(t), true) = (nohz, is_online) {
                let ts = self.per_cpu("tick_cpu_sched", cpu)?;
                let field = |off: u64, what: &str| r.u64(ts.wrapping_add(off), what);
                let idle_now =
                    r.u64(rq.wrapping_add(l.rq_curr), "rq.curr")? == r.u64(rq.wrapping_add(l.rq_idle), "rq.idle")?;
                let ongoing = match now {
                    Some(now) if idle_now => now.saturating_sub(field(t.idle_entrytime, "tick_sched.idle_entrytime")?),
                    _ => 0,
                };
                let (idle_extra, iowait_extra) = if nr_iowait == 0 { (ongoing, 0) } else { (0, ongoing) };
                // ktime_to_us() then back to ns: microsecond resolution, as the kernel prints.
                let us = |v: u64| v / 1000 * 1000;
                ns[3] = us(field(t.idle_sleeptime, "tick_sched.idle_sleeptime")?.wrapping_add(idle_extra));
                ns[4] = us(field(t.iowait_sleeptime, "tick_sched.iowait_sleeptime")?.wrapping_add(iowait_extra));
            }
            c.idle_ns = c.idle_ns.map(|i| i.wrapping_add(ns[3]));
            if is_online {
                c.cpu_times.push(ns.map(|v| v / NSEC_PER_USER_TICK));
            }
        }
        // idr_get_cursor(&init_pid_ns.idr) - 1: the last pid handed out.
        let next = r.u32(
            self.symbol("init_pid_ns")?.wrapping_add(l.pid_ns_idr_next),
            "init_pid_ns.idr.idr_next",
        )?;
        c.last_pid = (next as i32).wrapping_sub(1);
        Ok(c)
    }

    /// `avenrun[]` rounded as `get_avenrun(.., FIXED_1/200, 0)` hands it to /proc/loadavg,
    /// `nr_threads` and `total_forks`.
    fn loadavg(&self) -> Result<([u64; 3], u64, u64)> {
        let r = self.reader();
        let a = self.symbol("avenrun")?;
        let mut avenrun = [0; 3];
        for (i, v) in avenrun.iter_mut().enumerate() {
            *v = r
                .u64(a.wrapping_add(i as u64 * 8), "avenrun")?
                .wrapping_add(LOADAVG_ROUNDING);
        }
        let threads = u64::from(self.u32_at("nr_threads")?);
        Ok((avenrun, threads, self.u64_at("total_forks")?))
    }

    /// `/proc/swaps`: the active swap areas (`swap_info[]` entries in use and writable).
    fn swaps(&self) -> Result<Vec<Swap>> {
        let l = SwapLayout::resolve(self.types)?;
        let r = self.reader();
        let n = self.u32_at("nr_swapfiles")?.min(MAX_SWAPFILES);
        let table = self.symbol("swap_info")?;
        let paths = MountLayout::resolve(self.types)?;
        let root = self.init_root(&paths)?;
        let mut out = Vec::new();
        for i in 0..u64::from(n) {
            let si = r.u64(table.wrapping_add(i * 8), "swap_info[]")?;
            if si == 0
                || r.u64(si.wrapping_add(l.flags), "swap_info_struct.flags")? & SWP_USED_WRITEOK != SWP_USED_WRITEOK
            {
                continue;
            }
            let file = r.u64(si.wrapping_add(l.swap_file), "swap_info_struct.swap_file")?;
            let path = file.wrapping_add(l.file_path);
            let vfs = r.u64(path.wrapping_add(paths.path_mnt), "swap file f_path.mnt")?;
            let dentry = r.u64(path.wrapping_add(paths.path_dentry), "swap file f_path.dentry")?;
            let inode = r.u64(file.wrapping_add(l.file_inode), "file.f_inode")?;
            let mode = r.bytes(inode.wrapping_add(l.inode_mode), 2, "inode.i_mode")?;
            let mode = u16::from_le_bytes([mode[0], mode[1]]);
            let kb = |off: u64, what: &str| -> Result<u64> {
                Ok(u64::from(r.u32(si.wrapping_add(off), what)?) << (PAGE_SHIFT - 10))
            };
            out.push(Swap {
                filename: self
                    .prepend_path(&paths, vfs, dentry, root)?
                    .unwrap_or_else(|| "(unreachable)".into()),
                kind: if mode & S_IFMT == S_IFBLK { "partition" } else { "file" }.into(),
                size_kb: kb(l.pages, "swap_info_struct.pages")?,
                used_kb: kb(l.inuse_pages, "swap_info_struct.inuse_pages")?,
                priority: r.i32(si.wrapping_add(l.prio), "swap_info_struct.prio")?,
            });
        }
        Ok(out)
    }
}

/// `X86_FEATURE_TSC` (word 0, bit 4): `cpu MHz` is printed only with a TSC.
const X86_FEATURE_TSC: usize = 4;

struct Hstate {
    order: u32,
    nr: u64,
    free: u64,
    resv: u64,
    surplus: u64,
}

#[derive(Default)]
struct CpuCounters {
    idle_ns: Option<u64>,
    nr_running: u64,
    nr_switches: u64,
    nr_iowait: u64,
    cpu_times: Vec<[u64; 10]>,
    last_pid: i32,
}

/// A meminfo line counted in pages, shown in kB (`show_val_kb()`).
fn pages(out: &mut Vec<(String, u64)>, name: &str, v: u64) {
    out.push((name.to_owned(), v << (PAGE_SHIFT - 10)));
}

/// An unsigned integer field of 1, 2, 4 or 8 bytes.
fn uint(r: &KernelReader, addr: u64, size: u64, what: &str) -> Result<u64> {
    let size = size.clamp(1, 8) as usize;
    let b = r.bytes(addr, size, what)?;
    let mut buf = [0u8; 8];
    buf[..size].copy_from_slice(&b);
    Ok(u64::from_le_bytes(buf))
}
