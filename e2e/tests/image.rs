//! The container image and the kind workflow, checked without a Docker engine: the Dockerfile's
//! stages, the runtime user, what the build context leaves out, and that the Makefile's image
//! is the one the manifests run.

fn repo(file: &str) -> String {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (base image, instructions) of each `FROM` stage.
fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    let mut continued = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            continued.push_str(head);
            continue;
        }
        let instruction = std::mem::take(&mut continued) + line;
        if let Some(rest) = instruction.strip_prefix("FROM ") {
            let base = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            stages.push((base, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(instruction);
        }
    }
    stages
}

#[test]
fn dockerfile_caches_dependencies_builds_release_and_runs_small_and_non_root() {
    let dockerfile = repo("Dockerfile");
    let stages = stages(&dockerfile);
    assert!(
        stages.len() >= 3,
        "multi-stage build expected, got {}",
        stages.len()
    );
    let all: Vec<&String> = stages.iter().flat_map(|(_, body)| body).collect();
    let cook = all
        .iter()
        .position(|i| i.contains("cargo chef cook") && i.contains("--release"));
    let build = all
        .iter()
        .position(|i| i.contains("cargo build --release") && i.contains("--locked"));
    let (Some(cook), Some(build)) = (cook, build) else {
        panic!("expected `cargo chef cook --release` then `cargo build --release --locked`");
    };
    assert!(
        cook < build,
        "dependencies must be cooked before the sources are copied and built"
    );
    let (runtime, body) = stages.last().expect("a runtime stage");
    assert!(
        runtime.contains("slim") || runtime.contains("distroless"),
        "runtime image {runtime} is not a small base"
    );
    assert!(
        !runtime.starts_with("rust"),
        "the toolchain must not ship in the runtime image"
    );
    let user = body
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("a numeric USER");
    assert_ne!(
        uid, 0,
        "the image runs as non-root by default (the agent DaemonSet opts into root)"
    );
    assert!(
        body.iter()
            .any(|i| i.starts_with("ENTRYPOINT") && i.contains("bulwark"))
    );
    // The agent's tools: fusermount3 (fuse3), qemu-img (qemu-utils), and for the CSI node
    // plugin losetup (util-linux) and the file systems it makes and grows (ext4, xfs).
    for package in ["fuse3", "qemu-utils", "util-linux", "e2fsprogs", "xfsprogs"] {
        assert!(
            body.iter().any(|i| i.contains(package)),
            "the runtime image lacks {package}"
        );
    }
}

#[test]
fn the_build_context_leaves_out_build_output_and_history() {
    let ignored: Vec<String> = repo(".dockerignore")
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .collect();
    for must in ["target", ".git"] {
        assert!(
            ignored
                .iter()
                .any(|l| l == must || l == &format!("{must}/")),
            ".dockerignore lacks {must}"
        );
    }
}

#[test]
fn the_makefile_loads_the_image_the_manifests_run() {
    let makefile = repo("Makefile");
    let image = makefile
        .lines()
        .find_map(|l| l.strip_prefix("IMAGE ?= "))
        .expect("the Makefile names IMAGE")
        .trim()
        .to_owned();
    for manifest in ["deploy/controller.yaml", "deploy/agent.yaml"] {
        assert!(
            repo(manifest).contains(&format!("image: {image}")),
            "{manifest} does not run {image}"
        );
    }
    for target in [
        "kind-up:",
        "image:",
        "kind-load:",
        "deploy:",
        "e2e:",
        "kind-down:",
    ] {
        assert!(
            makefile.lines().any(|l| l.starts_with(target)),
            "Makefile lacks {target}"
        );
    }
}
