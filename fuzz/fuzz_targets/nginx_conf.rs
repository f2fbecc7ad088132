//! Loopback's nginx config confinement on any text: a confined config or a refusal. Whatever
//! it returns must confine again to itself once the pod's own directory counts as mounted
//! (its paths are then host paths): it parses, and every rule already holds.
#![no_main]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use loopback::kubelet::nginx_conf::{Confinement, confine};

fuzz_target!(|text: &str| {
    let mounts = vec![("/etc/fixture".to_string(), PathBuf::from("/w/p/volumes/conf"))];
    let pod = Confinement { address: Ipv4Addr::new(127, 9, 0, 1), pod_dir: Path::new("/w/p"), mounts: &mounts };
    if let Ok(confined) = confine("nginx.conf", text, &pod) {
        let mut host_mounts = mounts.clone();
        host_mounts.push(("/w/p".to_string(), PathBuf::from("/w/p")));
        let host = Confinement { mounts: &host_mounts, ..pod };
        let again = confine("nginx.conf", &confined, &host).expect("a confined config confines again");
        assert_eq!(again, confined, "confining is idempotent");
    }
});
