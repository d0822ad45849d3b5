//! `vidhost`: the one binary. A thin shell over the library crates.

mod cli;

fn main() -> std::process::ExitCode {
    tune_malloc();
    cli::main()
}

/// glibc's fast bins keep small freed chunks unmerged; every later request
/// of 1 KiB or more then stops to consolidate them all (`malloc_consolidate`
/// showed up at ~1-2 % of the CPU serving small ranges, under the locked
/// bins behind it). Small chunks still go through the per-thread tcache.
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}
