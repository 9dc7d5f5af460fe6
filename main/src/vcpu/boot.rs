//! Loading a Linux kernel, its initrd and command line into guest memory,
//! and the zero page (struct boot_params) of the 64-bit boot protocol.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{self, BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile};

use super::layout;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// "HdrS", the boot-protocol magic at offset 0x202 of a bzImage.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// xloadflags bit: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// loadflags bit: the kernel may use the heap (set by every modern loader).
const CAN_USE_HEAP: u8 = 1 << 7;
/// type_of_loader for a loader with no assigned id.
const LOADER_UNDEFINED: u8 = 0xff;
const PAGE_SIZE: u64 = 4096;

/// What went wrong while loading the guest's kernel, initrd or command line.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}: {err}")]
    Open { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a Linux kernel (neither a bzImage nor an x86-64 ELF vmlinux)")]
    NotAKernel { path: PathBuf },
    #[error("{path}: this bzImage has no 64-bit entry point")]
    No64BitEntry { path: PathBuf },
    #[error("cannot load kernel {path}: {err}")]
    Load { path: PathBuf, err: loader::Error },
    #[error("initrd {path} ({size} bytes) does not fit in guest RAM below {limit:#x}")]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read initrd {path}: {err}")]
    ReadInitrd { path: PathBuf, err: String },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("cannot write boot data to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Where the boot CPU starts and what it is handed.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct BootEntry {
    /// 64-bit entry point (guest-physical).
    pub entry: u64,
    /// The zero page (guest-physical), passed in %rsi.
    pub zero_page: u64,
}

/// Everything the boot vCPU needs in guest RAM before it starts: the ACPI
/// tables for `cpus` vCPUs, the boot GDT and page tables, and the kernel,
/// initrd and command line. Returns where to start.
pub fn prepare_linux(
    mem: &GuestMemoryMmap,
    cpus: u8,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> anyhow::Result<BootEntry> {
    use vm_memory::GuestMemoryRegion;
    let mem_size = mem.iter().map(|r| r.len()).sum();
    let rsdp = crate::platform::write_firmware_tables(mem, cpus)?;
    super::regs::write_boot_tables(mem)?;
    Ok(load_linux(mem, kernel, initrd, cmdline, mem_size, rsdp)?)
}

/// Loads kernel, initrd and command line, writes the zero page with an e820
/// map for `mem_size` bytes of RAM and `rsdp` (if any), and says where to start.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    mem_size: u64,
    rsdp: Option<GuestAddress>,
) -> Result<BootEntry, BootError> {
    let mut file = open(kernel)?;
    let (loaded, entry) = load_kernel(mem, kernel, &mut file)?;

    let mut params = boot_params::default();
    match loaded.setup_header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.kernel_alignment = 0x100_0000;
        }
    }
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;

    let cmdline_bytes = write_cmdline(mem, cmdline)?;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_bytes as u32;

    if let Some(path) = initrd {
        let (addr, size) = load_initrd(mem, path, &params, loaded.kernel_end, mem_size)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    if let Some(rsdp) = rsdp {
        params.acpi_rsdp_addr = rsdp.raw_value();
    }
    fill_e820(&mut params, mem_size);
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE_START))?;
    Ok(BootEntry {
        entry: entry.0,
        zero_page: layout::ZERO_PAGE_START,
    })
}

fn open(path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|err| BootError::Open {
        path: path.to_owned(),
        err,
    })
}

/// Loads a bzImage (64-bit boot protocol) or an ELF vmlinux; returns the
/// loader's result and the 64-bit entry point.
fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    file: &mut File,
) -> Result<(KernelLoaderResult, GuestAddress), BootError> {
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let load_err = |err| BootError::Load {
        path: path.to_owned(),
        err,
    };
    match BzImage::load(mem, None, file, himem) {
        Ok(res) => {
            let hdr = res
                .setup_header
                .expect("the bzImage loader always returns the header");
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry {
                    path: path.to_owned(),
                });
            }
            // The 64-bit entry point sits 0x200 bytes into the protected-mode code.
            let entry = res.kernel_load.unchecked_add(0x200);
            Ok((res, entry))
        }
        Err(loader::Error::Bzimage(linux_loader::loader::bzimage::Error::InvalidBzImage)) => {
            match Elf::load(mem, None, file, himem) {
                Ok(res) => Ok((res, res.kernel_load)),
                Err(loader::Error::Elf(
                    linux_loader::loader::elf::Error::InvalidElfMagicNumber,
                )) => Err(BootError::NotAKernel {
                    path: path.to_owned(),
                }),
                Err(e) => Err(load_err(e)),
            }
        }
        Err(e) => Err(load_err(e)),
    }
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BootError> {
    let mut cl =
        Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    cl.insert_str(cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), &cl)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(cmdline.len() + 1)
}

/// Puts the initrd as high as the kernel allows in low RAM, page aligned,
/// above the kernel; returns its address and size.
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    params: &boot_params,
    kernel_end: u64,
    mem_size: u64,
) -> Result<(u64, u64), BootError> {
    let mut file = open(path)?;
    let size = file
        .metadata()
        .map_err(|err| BootError::Open {
            path: path.to_owned(),
            err,
        })?
        .len();
    let max_addr = match params.hdr.initrd_addr_max {
        0 => 0x37ff_ffff,
        m => u64::from(m),
    };
    let limit = (max_addr + 1).min(mem_size).min(layout::MMIO32_START);
    let too_large = || BootError::InitrdTooLarge {
        path: path.to_owned(),
        size,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE_SIZE - 1);
    if addr < kernel_end.max(layout::HIMEM_START) {
        return Err(too_large());
    }
    let read_err = |e: &dyn std::fmt::Display| BootError::ReadInitrd {
        path: path.to_owned(),
        err: e.to_string(),
    };
    let mut slice = mem
        .get_slice(GuestAddress(addr), size as usize)
        .map_err(|e| read_err(&e))?;
    file.read_exact_volatile(&mut slice)
        .map_err(|e| read_err(&e))?;
    Ok((addr, size))
}

fn fill_e820(params: &mut boot_params, mem_size: u64) {
    let mut entries = vec![
        (0, layout::EBDA_START, E820_RAM),
        (
            layout::EBDA_START,
            layout::HIMEM_START - layout::EBDA_START,
            E820_RESERVED,
        ),
    ];
    for (start, len) in layout::ram_regions(mem_size) {
        let start = start.max(layout::HIMEM_START);
        let end = if start == layout::HIMEM_START {
            len
        } else {
            start + len
        };
        if end > start {
            entries.push((start, end - start, E820_RAM));
        }
    }
    for (i, (addr, size, kind)) in entries.into_iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: kind,
        };
        params.e820_entries = i as u8 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e820(mem_size: u64) -> Vec<(u64, u64, u32)> {
        let mut p = boot_params::default();
        fill_e820(&mut p, mem_size);
        p.e820_table[..p.e820_entries as usize]
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect()
    }

    #[test]
    fn e820_small_vm() {
        assert_eq!(
            e820(512 << 20),
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED),
                (0x100000, (512 << 20) - 0x100000, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_large_vm_skips_the_hole() {
        let map = e820(4 << 30);
        assert_eq!(map[2], (0x100000, 0xc000_0000 - 0x100000, E820_RAM));
        assert_eq!(map[3], (0x1_0000_0000, (4 << 30) - 0xc000_0000, E820_RAM));
        assert!(map
            .iter()
            .all(|&(a, s, _)| a + s <= 0xc000_0000 || a >= 0x1_0000_0000));
    }

    #[test]
    fn rejects_a_file_that_is_no_kernel() {
        let ram = crate::vcpu::memory::create_guest_ram(32 << 20).unwrap();
        let dir = std::env::temp_dir().join(format!("moatvm-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-kernel");
        std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
        let err =
            load_linux(&ram.memory, &path, None, "console=ttyS0", 32 << 20, None).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(err, BootError::NotAKernel { .. }), "{err}");
    }
}
