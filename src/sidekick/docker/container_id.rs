//! The own container id: which container is the sidekick running in?
//!
//! In this order: `--container` (an id, an id prefix or a name, validated), the files Docker
//! bind-mounts from `/var/lib/docker/containers/<id>/` as seen in `/proc/self/mountinfo`, the
//! cgroup path in `/proc/self/cgroup`, then the hostname when it looks like a container id.
//! Pure text parsing over an injectable file reader; nothing here talks to Docker.

use super::DockerError;
use std::io;

/// Where the own container id is looked for, in this order (after `--container`).
const MOUNTINFO: &str = "/proc/self/mountinfo";
const CGROUP: &str = "/proc/self/cgroup";
const HOSTNAME_FILES: [&str; 2] = ["/proc/sys/kernel/hostname", "/etc/hostname"];

/// Own container id: `override_id` if given (an id, a unique id prefix or a container name),
/// then `/proc/self/mountinfo` (the files Docker bind-mounts from
/// `/var/lib/docker/containers/<id>/`: `hostname`, `hosts`, `resolv.conf`; works under cgroup
/// v2), then `/proc/self/cgroup` (cgroup v1: `12:cpu:/docker/<id>`, or
/// `.../docker-<id>.scope` with the systemd driver), then the hostname when it looks like the
/// 12-character short id Docker gives a container by default.
pub(crate) fn own_container_id(override_id: Option<&str>) -> Result<String, DockerError> {
    own_container_id_with(override_id, |path| std::fs::read_to_string(path))
}

/// [`own_container_id`] over an injectable file reader (for tests).
fn own_container_id_with(
    override_id: Option<&str>,
    read: impl Fn(&str) -> io::Result<String>,
) -> Result<String, DockerError> {
    if let Some(raw) = override_id {
        return validate_override(raw);
    }
    let mut tried = Vec::new();

    match read(MOUNTINFO) {
        Ok(text) => match container_id_from_mountinfo(&text) {
            Some(id) => return Ok(id),
            None => tried.push(format!(
                "{MOUNTINFO} shows no mount from /var/lib/docker/containers/<id>/"
            )),
        },
        Err(e) => tried.push(format!("{MOUNTINFO}: {e}")),
    }

    match read(CGROUP) {
        Ok(text) => match container_id_from_cgroup(&text) {
            Some(id) => return Ok(id),
            None => tried.push(format!("{CGROUP} names no container")),
        },
        Err(e) => tried.push(format!("{CGROUP}: {e}")),
    }

    let mut hostname_read = false;
    for path in HOSTNAME_FILES {
        match read(path) {
            Ok(text) => {
                let name = text.trim();
                if let Some(id) = id_from_hostname(name) {
                    return Ok(id);
                }
                tried.push(format!("the hostname {name:?} is not a container id"));
                hostname_read = true;
                break;
            }
            Err(e) => tried.push(format!("{path}: {e}")),
        }
    }
    if !hostname_read {
        tried.push("no hostname".to_string());
    }

    Err(DockerError::ContainerIdNotFound {
        tried: tried.join("; "),
    })
}

/// Accepts what Docker accepts as a container reference in a URL path: an id, an id prefix or a
/// name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, a leading `/` as in `docker inspect`'s `Name` dropped).
fn validate_override(raw: &str) -> Result<String, DockerError> {
    let id = raw.trim();
    let id = id.strip_prefix('/').unwrap_or(id);
    let valid = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(id.to_string())
    } else {
        Err(DockerError::InvalidContainer {
            id: raw.to_string(),
        })
    }
}

/// A full container id: 64 lowercase hex digits.
fn is_full_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id in `/proc/self/mountinfo` text: the root (4th field) of a mount of
/// `<...>/containers/<64 hex>/hostname`, `hosts` or `resolv.conf`, the files Docker bind-mounts
/// into every container. A mount onto `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf` wins
/// over one elsewhere (which could be another container's file mounted in on purpose).
fn container_id_from_mountinfo(text: &str) -> Option<String> {
    let mut elsewhere = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(root), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let Some(id) = id_in_container_file(root) else {
            continue;
        };
        if matches!(
            mount_point,
            "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
        ) {
            return Some(id);
        }
        elsewhere.get_or_insert(id);
    }
    elsewhere
}

/// `<...>/containers/<64 hex>/{hostname,hosts,resolv.conf}` → the id.
fn id_in_container_file(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once('/')?;
    if !matches!(file, "hostname" | "hosts" | "resolv.conf") {
        return None;
    }
    let (parent, id) = dir.rsplit_once('/')?;
    let under_containers = parent == "/containers" || parent.ends_with("/containers");
    (under_containers && is_full_id(id)).then(|| id.to_string())
}

/// The container id in `/proc/self/cgroup` text (cgroup v1, or v2 without a cgroup namespace):
/// the innermost path segment that is a full id, bare (`/docker/<id>`) or as a systemd scope
/// (`/system.slice/docker-<id>.scope`). Under cgroup v2 with a private cgroup namespace the
/// only line is `0::/`, which names nothing.
fn container_id_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(|segment| {
            let segment = segment.strip_suffix(".scope").unwrap_or(segment);
            let id = segment.rsplit_once('-').map_or(segment, |(_, id)| id);
            is_full_id(id).then(|| id.to_string())
        })
    })
}

/// Docker names a container's host after its short id (12 hex digits) unless `--hostname` is
/// given; anything else is not trusted as an id (it could name another container).
fn id_from_hostname(name: &str) -> Option<String> {
    ((name.len() == 12 || name.len() == 64) && is_lower_hex(name)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ID: &str = "dae6f77ee4581d58b9317585caf177d4ebf929451e344c47b38532a49a14cdd5";
    const OTHER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // ---- mountinfo -------------------------------------------------------------------------

    fn docker_mountinfo(id: &str) -> String {
        format!(
            "\
1130 1034 0:109 / / rw,relatime master:471 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X4J5:/var/lib/docker/overlay2/l/Q2ZP,upperdir=/var/lib/docker/overlay2/9f0c5c0a2b1d4e3f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f/diff,workdir=/var/lib/docker/overlay2/9f0c5c0a2b1d4e3f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f/work
1131 1130 0:112 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1132 1130 0:113 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1133 1132 0:114 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
1134 1130 0:115 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1135 1134 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
1136 1132 0:111 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1137 1132 0:116 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
1138 1130 259:2 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
1139 1130 259:2 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
1140 1130 259:2 /var/lib/docker/containers/{id}/hosts /etc/hosts rw,relatime - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
1035 1131 0:112 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
1036 1131 0:112 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
1037 1131 0:117 / /proc/acpi ro,relatime - tmpfs tmpfs ro
1038 1131 0:113 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
"
        )
    }

    #[test]
    fn mountinfo_cgroup_v2_docker() {
        assert_eq!(
            container_id_from_mountinfo(&docker_mountinfo(ID)).as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn mountinfo_separate_data_root_filesystem() {
        // /var/lib/docker on its own filesystem: the root field is relative to it.
        let text = format!(
            "36 25 8:17 /containers/{ID}/hostname /etc/hostname rw,relatime - xfs /dev/sdb1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&text).as_deref(), Some(ID));
    }

    #[test]
    fn mountinfo_prefers_the_etc_mounts() {
        // Another container's file mounted elsewhere (a log shipper, say) must not win.
        let text = format!(
            "40 30 8:1 /var/lib/docker/containers/{OTHER}/hosts /other/hosts rw - ext4 /dev/sda1 rw\n\
             41 30 8:1 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&text).as_deref(), Some(ID));
    }

    #[test]
    fn mountinfo_without_docker_paths() {
        let host = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
26 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=8119500k
";
        assert_eq!(container_id_from_mountinfo(host), None);
        assert_eq!(container_id_from_mountinfo(""), None);
        // overlay2 layer ids are 64 hex digits too, but not container files.
        let layer = format!(
            "50 1 0:40 /var/lib/docker/overlay2/{OTHER}/merged/etc/hostname /x rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&layer), None);
        // cgroup v1 mounts inside a container carry /docker/<id>: that is /proc/self/cgroup's job.
        let cgroup_mount = format!(
            "75 74 0:29 /docker/{ID} /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n"
        );
        assert_eq!(container_id_from_mountinfo(&cgroup_mount), None);
        // A short or upper-case id is not a container directory.
        let bad = "60 1 8:1 /var/lib/docker/containers/dae6f77ee458/hosts /etc/hosts rw - ext4 /dev/sda1 rw\n";
        assert_eq!(container_id_from_mountinfo(bad), None);
    }

    // ---- cgroup ----------------------------------------------------------------------------

    #[test]
    fn cgroup_v1_cgroupfs_driver() {
        let text = format!(
            "12:cpu,cpuacct:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/docker/{ID}\n"
        );
        assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_v1_systemd_driver() {
        let text = format!(
            "12:pids:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n"
        );
        assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_nested_takes_the_innermost() {
        let text = format!("4:memory:/docker/{OTHER}/docker/{ID}\n");
        assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_without_container() {
        assert_eq!(container_id_from_cgroup("0::/\n"), None);
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n12:cpu:/\n"),
            None
        );
        assert_eq!(container_id_from_cgroup(""), None);
        assert_eq!(container_id_from_cgroup("garbage without colons\n"), None);
    }

    // ---- own_container_id ------------------------------------------------------------------

    fn files(entries: &[(&str, String)]) -> impl Fn(&str) -> io::Result<String> {
        let map: HashMap<String, String> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |path| {
            map.get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn own_id_override_wins_and_is_validated() {
        let read = files(&[(MOUNTINFO, docker_mountinfo(ID))]);
        assert_eq!(
            own_container_id_with(Some("web-1"), &read).unwrap(),
            "web-1"
        );
        assert_eq!(own_container_id_with(Some("/web"), &read).unwrap(), "web");
        for bad in ["", " ", "../containers/x", "a/b", "web?x=1", "-x"] {
            let err = own_container_id_with(Some(bad), &read).unwrap_err();
            assert!(
                matches!(err, DockerError::InvalidContainer { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn own_id_falls_back_in_order() {
        let cgroup = format!("1:cpu:/docker/{OTHER}\n");
        let read = files(&[
            (MOUNTINFO, docker_mountinfo(ID)),
            (CGROUP, cgroup.clone()),
            ("/proc/sys/kernel/hostname", "abcdefabcdef\n".into()),
        ]);
        assert_eq!(own_container_id_with(None, &read).unwrap(), ID);

        let read = files(&[
            (MOUNTINFO, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".into()),
            (CGROUP, cgroup),
            ("/proc/sys/kernel/hostname", "abcdefabcdef\n".into()),
        ]);
        assert_eq!(own_container_id_with(None, &read).unwrap(), OTHER);

        let read = files(&[
            (CGROUP, "0::/\n".into()),
            ("/etc/hostname", "abcdefabcdef\n".into()),
        ]);
        assert_eq!(own_container_id_with(None, &read).unwrap(), "abcdefabcdef");
    }

    #[test]
    fn own_id_not_found_says_what_was_tried() {
        let read = files(&[
            (MOUNTINFO, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".into()),
            (CGROUP, "0::/\n".into()),
            ("/proc/sys/kernel/hostname", "web\n".into()),
        ]);
        let err = own_container_id_with(None, &read).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DockerError::ContainerIdNotFound { .. }));
        for part in [MOUNTINFO, CGROUP, "\"web\"", "--container"] {
            assert!(text.contains(part), "{part} missing in: {text}");
        }
    }
}
