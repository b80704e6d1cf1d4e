use crate::common::damage::{build, copy_dir, flip, open};
#[tokio::test]
async fn probe() {
    let original = tempfile::tempdir().unwrap();
    let ack = build(original.path()).await;
    open(original.path(), &ack).await.unwrap();
    for (name, at) in [("live", 7238usize), ("dead", 2082)] {
        let d = std::path::PathBuf::from(format!("/tmp/pv/{name}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        copy_dir(original.path(), &d);
        flip(&d.join("journal/db"), at, 0x55);
    }
}
