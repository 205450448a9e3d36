//! Errno names as users write them. Linux x86_64/aarch64 numbers.
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EINTR", 4),
    ("EIO", 5),
    ("ENXIO", 6),
    ("EBADF", 9),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("ENOTDIR", 20),
    ("EISDIR", 21),
    ("EINVAL", 22),
    ("ENFILE", 23),
    ("EMFILE", 24),
    ("EFBIG", 27),
    ("ENOSPC", 28),
    ("ESPIPE", 29),
    ("EROFS", 30),
    ("EMLINK", 31),
    ("EPIPE", 32),
    ("ENAMETOOLONG", 36),
    ("ENOTEMPTY", 39),
    ("ENODATA", 61),
    ("ETIME", 62),
    ("EOVERFLOW", 75),
    ("EBADFD", 77),
    ("ENOTSOCK", 88),
    ("EMSGSIZE", 90),
    ("EOPNOTSUPP", 95),
    ("EADDRINUSE", 98),
    ("EADDRNOTAVAIL", 99),
    ("ENETDOWN", 100),
    ("ENETUNREACH", 101),
    ("ECONNABORTED", 103),
    ("ECONNRESET", 104),
    ("ENOBUFS", 105),
    ("ENOTCONN", 107),
    ("ETIMEDOUT", 110),
    ("ECONNREFUSED", 111),
    ("EHOSTUNREACH", 113),
    ("ESTALE", 116),
    ("EDQUOT", 122),
    ("ECANCELED", 125),
];

/// `EIO` -> 5; also accepts a plain positive number.
pub fn errno_from_name(name: &str) -> Option<i32> {
    if let Ok(number) = name.parse::<i32>() {
        return (number > 0 && number < 4096).then_some(number);
    }
    let upper = name.to_ascii_uppercase();
    ERRNOS
        .iter()
        .find(|(known, _)| *known == upper)
        .map(|(_, number)| *number)
}

pub fn errno_name(number: i32) -> Option<&'static str> {
    ERRNOS
        .iter()
        .find(|(_, known)| *known == number)
        .map(|(name, _)| *name)
}
