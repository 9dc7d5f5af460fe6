//! Keeping an idle VMM small: what every moatvm process does once it has
//! set up and before it serves.
//!
//! A process allocates mostly while it sets up (parsing its role,
//! compiling its seccomp filter, building the device) and next to nothing
//! afterwards: the data paths reuse their buffers. And most of the code it
//! ran to set up (argument parsing, netlink, the kernel loader, the jail)
//! never runs again. So: one malloc arena for all threads, the heap's free
//! pages handed back, and the mappings of the code unmapped from the page
//! tables so that only what serving touches comes back (the pages stay in
//! the page cache, shared and reclaimable, not in the process).

use std::ffi::c_int;

/// Makes every thread allocate from the main arena: without this each
/// thread's first allocation creates an arena of its own, whose touched
/// pages stay resident for the life of the process.
pub fn one_arena() {
    // SAFETY: mallopt only changes malloc's tuning; called at start, before
    // any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Called when setting up is over: gives the heap's free pages back and
/// drops the code's mappings (see the module's comment). Needs only
/// `brk` and `madvise`, which every seccomp policy allows.
pub fn setup_done() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    // SAFETY: dl_iterate_phdr calls `drop_code` once per loaded object with
    // a pointer valid for that call; the data pointer is unused.
    unsafe { libc::dl_iterate_phdr(Some(drop_code), std::ptr::null_mut()) };
}

/// For one loaded object: MADV_DONTNEED over each of its segments that is
/// not writable (code, read-only data, symbol tables). Those pages are
/// clean copies of the file (nothing writes them: the relocated read-only
/// data, RELRO, lies in a writable segment and is left alone), so dropping
/// them loses nothing and the next access maps them again. An object with
/// text relocations (none in Debian or in moatvm) is skipped: its code
/// pages were written.
unsafe extern "C" fn drop_code(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    _data: *mut libc::c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` whose `dlpi_phdr`
    // points at `dlpi_phnum` program headers of a loaded object.
    let (base, phdrs, name) = unsafe {
        let info = &*info;
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        let name = if info.dlpi_name.is_null() {
            &[][..]
        } else {
            std::ffi::CStr::from_ptr(info.dlpi_name).to_bytes()
        };
        (
            info.dlpi_addr as usize,
            std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)),
            name,
        )
    };
    // The vDSO is the kernel's own mapping: left as it is.
    if name.starts_with(b"linux-vdso") || text_relocated(base, phdrs) {
        return 0;
    }
    let page = 4096usize;
    for p in phdrs {
        if p.p_type != libc::PT_LOAD || p.p_flags & libc::PF_W != 0 || p.p_memsz == 0 {
            continue;
        }
        // Whole pages inside the segment only: an edge page may be shared
        // with a writable neighbour.
        let start = (base + p.p_vaddr as usize).next_multiple_of(page);
        let end = (base + (p.p_vaddr + p.p_memsz) as usize) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside a read-only segment of a
            // loaded object: clean, file-backed, private pages that nothing
            // has written; MADV_DONTNEED only unmaps them until next use.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    0
}

/// An entry of an ELF dynamic section (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

/// Whether the object's dynamic section has DT_TEXTREL or DF_TEXTREL.
fn text_relocated(base: usize, phdrs: &[libc::Elf64_Phdr]) -> bool {
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 4;
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
        return false;
    };
    let count = dynamic.p_memsz as usize / size_of::<Dyn>();
    let first = (base + dynamic.p_vaddr as usize) as *const Dyn;
    for i in 0..count {
        // SAFETY: the PT_DYNAMIC segment of a loaded object is mapped and
        // holds `count` entries, ended by DT_NULL.
        let entry = unsafe { &*first.add(i) };
        match entry.d_tag {
            DT_NULL => break,
            DT_TEXTREL => return true,
            DT_FLAGS if entry.d_val & DF_TEXTREL != 0 => return true,
            _ => {}
        }
    }
    false
}
