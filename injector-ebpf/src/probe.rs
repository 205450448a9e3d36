//! Programs that do nothing, for `injector probe` to find out whether this kernel lets them load
//! and attach (BPF LSM and fentry are refused on some kernels, allowed on stock distro ones).
use aya_ebpf::{
    macros::{fentry, lsm},
    programs::{FEntryContext, LsmContext},
};

#[lsm(hook = "file_permission")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[fentry(function = "vfs_fsync_range")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}
