//! Signals end the process with a report that matches the files on disk.
//!
//! Ctrl-C and SIGTERM: unfinished temporaries are removed and the outputs completed before the signal (renamed
//! into place) are named; exit code 130. The rename of an output and the handler take one lock
//! ([`quantforge_formats::interrupt`]), so an output is either named as completed or was never written.
//! SIGBUS: an input file truncated by another process while it is memory-mapped makes the next read of a lost
//! page fault. The handler removes the unfinished temporaries, names the mapped input files and exits with
//! code 1, as for any other error.

use std::path::PathBuf;

use quantforge_formats::InterruptReport;

/// Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED: i32 = 130;

/// Install the Ctrl-C / SIGTERM and SIGBUS handlers.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let report = quantforge_formats::interrupt();
        eprintln!("{}", report.message());
        std::process::exit(INTERRUPTED);
    });
    #[cfg(unix)]
    install_sigbus();
}

/// The message of a SIGBUS: which inputs were mapped, and what the run left on disk.
pub fn fault_message(mapped: &[PathBuf], report: Option<&InterruptReport>) -> String {
    let files = if mapped.is_empty() { "an input file".to_string() } else { quantforge_formats::path_list(mapped) };
    let left = match report {
        Some(r) if !r.completed.is_empty() => {
            format!("only {} was completed before", quantforge_formats::path_list(&r.completed))
        }
        Some(_) => "no output was written".to_string(),
        None => "unfinished temporary files may remain; the next run for the same output removes them".to_string(),
    };
    format!(
        "error: {files}: the input was truncated or replaced by another process while being read (bus error); \
         {left}\n"
    )
}

#[cfg(unix)]
fn install_sigbus() {
    // SAFETY: `sigaction` is given a zero-initialised struct (a valid value for every field) with a handler of
    // the signature the kernel calls and an empty mask; the old action is not asked for (null pointer).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESETHAND: other threads reading the same mapping fault too, and must wait for the first
        // handler's exit rather than take the default action (a crash) in the meantime.
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

/// The SIGBUS handler. A bus error here is synchronous: a load from a mapped input inside quantforge's own code
/// (copying tensor bytes), never inside the allocator or while a registry lock is held by this thread, and both
/// registries are only tried, never waited for. It allocates the message, which is acceptable on this path
/// (the alternative is the default action: a crash with no message that leaves the temporary behind).
#[cfg(unix)]
extern "C" fn on_sigbus(_signal: libc::c_int) {
    static HANDLING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if HANDLING.swap(true, std::sync::atomic::Ordering::SeqCst) {
        // Another thread is reporting and will end the process; returning would fault again.
        loop {
            // SAFETY: `pause` is async-signal-safe and only waits.
            unsafe { libc::pause() };
        }
    }
    let report = quantforge_formats::interrupt_from_fault();
    let msg = fault_message(&quantforge_formats::mapped_files(), report.as_ref());
    // SAFETY: `write` and `_exit` are async-signal-safe; `msg` outlives the call.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_message_names_the_inputs_and_what_is_left() {
        let mapped = [PathBuf::from("/m/a.gguf"), PathBuf::from("/m/b.gguf")];
        let none = InterruptReport::default();
        let m = fault_message(&mapped, Some(&none));
        assert!(m.starts_with("error: /m/a.gguf, /m/b.gguf: the input was truncated"), "{m}");
        assert!(m.ends_with("no output was written\n"), "{m}");
        let done = InterruptReport { completed: vec![PathBuf::from("x.gguf")], removed: vec![] };
        assert!(fault_message(&mapped, Some(&done)).contains("only x.gguf was completed before"));
        let m = fault_message(&[], None);
        assert!(m.contains("an input file") && m.contains("next run"), "{m}");
    }
}
