//! error(ERRNO) in attach mode. The sys_enter program decides (it counts the calls, so "the 3rd
//! write" stays exact) and marks the thread in PENDING_ERRORS; the first LSM hook that thread's
//! call reaches takes the mark and fails the call. Only marked threads are touched, and only
//! the fault program, which filters on the target, marks them.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, maps::HashMap, programs::LsmContext,
};

/// Value: the call's return value, `-errno`.
#[map]
pub static PENDING_ERRORS: HashMap<u64, i64> = HashMap::with_max_entries(4096, 0);

/// Marks the current thread's call to fail with `errno`.
pub fn mark(pid_tgid: u64, errno: u32) {
    let _ = PENDING_ERRORS.insert(&pid_tgid, &-i64::from(errno), 0);
}

/// Drops a mark that no hook took (the call failed before reaching one), so it cannot fail a
/// later, unrelated call of the thread.
pub fn clear(pid_tgid: u64) {
    let _ = PENDING_ERRORS.remove(&pid_tgid);
}

/// An LSM program's verdict: an earlier LSM's denial stands; otherwise the thread's pending
/// error, taken once; otherwise allow.
#[inline(always)]
fn deliver(previous: i64) -> i64 {
    if previous != 0 {
        return previous;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a lookup with a valid key; the value is copied out before the entry is removed.
    let Some(&error) = (unsafe { PENDING_ERRORS.get(&pid_tgid) }) else {
        return 0;
    };
    clear(pid_tgid);
    // The verifier (6.8 and later) only accepts LSM results it can prove are in -4095..=0.
    if error < -4095 {
        return -5;
    }
    if error > 0 {
        return -5;
    }
    error
}

/// One LSM program per hook. Not aya's `#[lsm]`: its wrapper returns i32, which reaches the
/// verifier zero-extended (-5 as 4294967291) and is refused. `$previous` is the index of the
/// hook's last argument, the result of the LSM before it (the hook's parameter count).
macro_rules! error_hook {
    ($(#[$doc:meta])* $name:ident, $section:literal, $previous:literal) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(ctx: *mut c_void) -> i64 {
            deliver(LsmContext::new(ctx).arg($previous))
        }
    };
}

error_hook!(error_file_permission, "lsm/file_permission", 2);
error_hook!(error_file_open, "lsm/file_open", 1);
error_hook!(
    /// ftruncate on 6.2 and later.
    error_file_truncate,
    "lsm/file_truncate",
    1
);
error_hook!(
    /// truncate, and ftruncate before 6.2.
    error_path_truncate,
    "lsm/path_truncate",
    1
);
error_hook!(error_socket_sendmsg, "lsm/socket_sendmsg", 3);
error_hook!(error_socket_recvmsg, "lsm/socket_recvmsg", 4);
error_hook!(error_socket_connect, "lsm/socket_connect", 3);
error_hook!(error_socket_accept, "lsm/socket_accept", 2);
error_hook!(error_inode_rename, "lsm/inode_rename", 4);
error_hook!(error_inode_unlink, "lsm/inode_unlink", 2);
error_hook!(error_inode_rmdir, "lsm/inode_rmdir", 2);
error_hook!(error_inode_mkdir, "lsm/inode_mkdir", 3);
