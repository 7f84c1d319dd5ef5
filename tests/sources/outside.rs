//! Nothing is read outside the image: in an OCI layout directory a blob that is a symlink (to
//! a file outside the layout, or inside it) is refused, as are special files; archive entries
//! are never extracted (tests/sources/bad_input.rs `unsafe_names_links_and_duplicates`, and
//! `classic_docker_save_layer_symlinks_are_followed_inside_the_archive` in kinds.rs).

use super::helpers::*;

#[test]
fn layout_blobs_that_are_symlinks_or_not_files_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let img = sample(&dir, &SampleSpec::small(41));
    let outside = t.path().join("secret.txt");
    fs::write(&outside, b"not part of the image").unwrap();
    let layer = blob_file(&dir, &img.layers[0].digest);
    let name = format!("blobs/sha256/{}", img.layers[0].digest.hex());
    let src = format!("oci:{}", dir.display());
    // To a file outside the layout.
    fs::remove_file(&layer).unwrap();
    std::os::unix::fs::symlink(&outside, &layer).unwrap();
    assert_has(&err(&src), &[&name, "is a symlink where a blob should be"]);
    // To the right bytes, inside the layout: still refused (a link can change under us).
    let copy = dir.join("copy");
    fs::remove_file(&layer).unwrap();
    fs::write(&copy, b"x").unwrap();
    std::os::unix::fs::symlink(&copy, &layer).unwrap();
    assert_has(&err(&src), &[&name, "is a symlink where a blob should be"]);
    // A directory, a fifo.
    fs::remove_file(&layer).unwrap();
    fs::create_dir(&layer).unwrap();
    assert_has(&err(&src), &[&name, "is a directory, not a regular file"]);
    fs::remove_dir(&layer).unwrap();
    let st = Command::new("mkfifo").arg(&layer).status().unwrap();
    assert!(st.success());
    assert_has(&err(&src), &[&name, "not a regular file"]);
}
