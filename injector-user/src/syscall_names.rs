use syscalls::Sysno;

/// The name of syscall `nr` on this architecture, e.g. 74 -> "fsync" on x86_64.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    Sysno::new(nr as usize).map(|sysno| sysno.name())
}

/// The number of the syscall called `name` on this architecture.
pub fn syscall_number(name: &str) -> Option<u32> {
    name.parse::<Sysno>().ok().map(|sysno| sysno.id() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        let fsync = syscall_number("fsync").expect("fsync exists everywhere");
        assert_eq!(syscall_name(fsync), Some("fsync"));
        assert_eq!(syscall_number("no_such_syscall"), None);
    }
}
