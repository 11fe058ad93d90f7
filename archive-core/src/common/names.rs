//! Checks of the values that name things: archive hosts, archive
//! directories and cluster names. They run on the client before anything
//! is sent and again on the server before anything is created.

use crate::common::error::{Error, Result};

/// Splits Archive 2.0's 'HOST1 HOST2' argument and checks each name.
pub fn parse_hosts(arg: &str) -> Result<Vec<String>> {
    let hosts: Vec<String> = arg.split_whitespace().map(str::to_string).collect();
    if hosts.is_empty() || hosts.len() > 2 {
        return Err(Error::Usage(format!(
            "expected one or two archive hosts in {arg:?}, e.g. 'arch1 arch2'"
        )));
    }
    for h in &hosts {
        validate_host_name(h)?;
    }
    if hosts.len() == 2 && hosts[0] == hosts[1] {
        return Err(Error::Usage(format!(
            "the two archive hosts in {arg:?} are the same"
        )));
    }
    Ok(hosts)
}

/// Checks that a host alias is safe to use in a file name and on an ssh
/// command line (it never reaches a shell, but it does reach ssh's parser).
pub fn validate_host_name(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "host {host:?} is not a valid host name or ssh alias: use letters, digits, '.', '-', '_'"
        )))
    }
}

/// Checks an archive directory argument: absolute, no `.`/`..`, and only
/// letters, digits, '.', '-', '_' in components. It never reaches a shell,
/// but refusing odd names keeps every log line and path unambiguous.
pub fn validate_dir_arg(dir: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Refused(format!(
            "archive directory {dir:?} is not acceptable: {why}"
        )))
    };
    if !dir.starts_with('/') {
        return bad("it must be an absolute path");
    }
    if dir.len() > 1024 {
        return bad("it is longer than 1024 characters");
    }
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return bad("'.' and '..' are not allowed");
        }
        if !comp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return bad("only letters, digits, '.', '-', '_' and '/' are allowed");
        }
    }
    Ok(())
}

/// Checks a cluster name (used in file names and logs).
pub fn validate_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "cluster name {name:?} is not acceptable: use 1-64 letters, digits, '.', '-', '_'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_argument() {
        assert_eq!(parse_hosts("arch1 arch2").unwrap(), ["arch1", "arch2"]);
        assert_eq!(parse_hosts(" arch1 ").unwrap(), ["arch1"]);
        assert!(parse_hosts("").is_err());
        assert!(parse_hosts("a b c").is_err());
        assert!(parse_hosts("a a").is_err());
        assert!(parse_hosts("a;b").is_err());
    }

    #[test]
    fn directories_are_checked() {
        assert!(validate_dir_arg("/var/lib/pgarchive/main-15.a_b").is_ok());
        for bad in ["relative/main", "/a/../b", "/a/./b", "/a/$x"] {
            assert!(validate_dir_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_are_checked() {
        assert!(validate_host_name("arch-1.example.com").is_ok());
        for bad in ["", "-oProxyCommand=x", "a b", "a;b", "$(x)", "../x"] {
            assert!(validate_host_name(bad).is_err(), "{bad}");
        }
    }
}
