//! `hoist inspect`'s report: the plan and the ELF census, from real sample images.

use hoist::inspect::{InspectOptions, inspect};
use hoist::platform::Platform;
use hoist::source::SourceRef;
use hoist_testkit::sample::{
    LayerContent, LayerSpec, SampleCompression, SampleSpec, write_oci_layout,
};

const X86_64: u16 = 0x3e;
const AARCH64: u16 = 0xb7;

fn image(
    dir: &std::path::Path,
    layers: Vec<LayerContent>,
    compression: SampleCompression,
) -> SourceRef {
    image_for(dir, layers, compression, Platform::linux_amd64())
}

fn image_for(
    dir: &std::path::Path,
    layers: Vec<LayerContent>,
    compression: SampleCompression,
    platform: Platform,
) -> SourceRef {
    let spec = SampleSpec {
        platform,
        layers: layers
            .into_iter()
            .map(|c| LayerSpec::new(c, compression))
            .collect(),
        ..SampleSpec::small(7)
    };
    write_oci_layout(dir, &spec).expect("write sample");
    format!("oci:{}", dir.display())
        .parse()
        .expect("source ref")
}

fn census_opts() -> InspectOptions {
    InspectOptions {
        elf_census: true,
        ..InspectOptions::default()
    }
}

#[test]
fn arm64_binaries_in_an_amd64_image_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = image(
        dir.path(),
        vec![
            LayerContent::SmallFiles(4),
            LayerContent::Elf {
                machine: AARCH64,
                count: 12,
            },
            LayerContent::Elf {
                machine: X86_64,
                count: 1,
            },
        ],
        SampleCompression::None,
    );
    let report = inspect(&src, &census_opts()).unwrap();
    let msg = report.arch_mismatch.clone().expect("mismatch reported");
    assert!(
        msg.starts_with(
            "config says linux/amd64 but 12 of 12 ELF files in layer 2 are aarch64: the image was built for linux/arm64; rebuild with --platform linux/amd64"
        ),
        "{msg}"
    );
    let text = report.to_string();
    assert!(text.contains("ELF 12 arm64"), "{text}");
    assert!(text.contains("binaries  MISMATCH"), "{text}");
}

#[test]
fn gzip_layers_are_decompressed_for_the_census() {
    let dir = tempfile::tempdir().unwrap();
    let src = image(
        dir.path(),
        vec![LayerContent::Elf {
            machine: AARCH64,
            count: 3,
        }],
        SampleCompression::Gzip,
    );
    let report = inspect(&src, &census_opts()).unwrap();
    assert_eq!(
        report.elf.as_ref().unwrap()[0].by_arch.get("arm64"),
        Some(&3)
    );
    assert!(report.arch_mismatch.is_some());
    // The same image is fine when it is what the user asked for.
    let mut opts = census_opts();
    opts.plan.platform = "linux/arm64".parse::<Platform>().unwrap();
    let err = inspect(&src, &opts).unwrap_err().to_string();
    // The config says amd64, so the platform guard refuses it before any census.
    assert!(err.contains("linux/amd64"), "{err}");
}

#[test]
fn native_images_with_a_few_foreign_binaries_pass() {
    let dir = tempfile::tempdir().unwrap();
    let src = image(
        dir.path(),
        vec![
            LayerContent::Elf {
                machine: X86_64,
                count: 40,
            },
            LayerContent::Elf {
                machine: AARCH64,
                count: 3,
            },
        ],
        SampleCompression::None,
    );
    let report = inspect(&src, &census_opts()).unwrap();
    assert_eq!(report.arch_mismatch, None);
    assert!(
        report
            .to_string()
            .contains("binaries  43 ELF files match linux/amd64"),
        "{report}"
    );
}

#[test]
fn images_without_binaries_pass_and_json_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let src = image(
        dir.path(),
        vec![LayerContent::SmallFiles(10), LayerContent::Text(4096)],
        SampleCompression::None,
    );
    let report = inspect(&src, &census_opts()).unwrap();
    assert_eq!(report.arch_mismatch, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["platform"], "linux/amd64");
    assert_eq!(json["layers"].as_array().unwrap().len(), 2);
    assert_eq!(json["layers"][0]["action"]["kind"], "compress");
    assert_eq!(json["elf"][0]["by_arch"], serde_json::json!({}));
}

/// Real binaries of this machine (x86-64): a dynamically linked one and a static-pie one, in an
/// image whose config says linux/arm64 (the reverse of the story in seed/).
#[test]
fn real_amd64_binaries_in_an_arm64_image_are_caught() {
    let real = [
        std::path::PathBuf::from("/bin/true"),
        "/sbin/ldconfig".into(),
    ];
    assert!(
        real.iter().all(|p| p.exists()),
        "Debian ships /bin/true and /sbin/ldconfig"
    );
    let arm64: Platform = "linux/arm64".parse().unwrap();
    let mut opts = census_opts();
    opts.plan.platform = arm64.clone();

    let dir = tempfile::tempdir().unwrap();
    let src = image_for(
        dir.path(),
        vec![LayerContent::HostFiles(real.to_vec())],
        SampleCompression::Gzip,
        arm64.clone(),
    );
    let msg = inspect(&src, &opts).unwrap().arch_mismatch.expect("caught");
    assert!(
        msg.starts_with("config says linux/arm64 but 2 of 2 ELF files in layer 1 are x86-64: the image was built for linux/amd64; rebuild with --platform linux/arm64"),
        "{msg}"
    );

    // One static binary is the whole image: it decides (it is what would fail to exec).
    let dir = tempfile::tempdir().unwrap();
    let src = image_for(
        dir.path(),
        vec![LayerContent::HostFiles(vec![real[1].clone()])],
        SampleCompression::None,
        arm64,
    );
    let report = inspect(&src, &opts).unwrap();
    assert_eq!(
        report.elf.as_ref().unwrap()[0].by_arch.get("amd64"),
        Some(&1)
    );
    assert!(report.arch_mismatch.is_some());
}
