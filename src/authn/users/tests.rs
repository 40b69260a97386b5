//! Tests of the users file: sealing, concurrent writers, the sealing key's source.

use super::*;

/// Writers that each read, change and write the file (several CLI runs, the CLI and the
/// proxy) all land: none puts back a file without the others' changes.
#[test]
fn concurrent_changes_to_the_users_file_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.toml");
    let key = dir.path().join("users.key");
    UserStore::open(&path, &key, None).expect("create the key");
    let writers: Vec<_> = (0..6)
        .map(|writer| {
            let (path, key) = (path.clone(), key.clone());
            std::thread::spawn(move || {
                let store = UserStore::open(&path, &key, None).expect("open");
                for n in 0..5 {
                    let user = User {
                        name: format!("user-{writer}-{n}"),
                        ..User::default()
                    };
                    store.add(user).expect("add");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let store = UserStore::open(&path, &key, None).expect("open");
    assert_eq!(store.all().len(), 30, "changes were lost");
}

/// A missing sealing key is made anew only on a first start: not when `key_env` is the
/// configured source, and not over secrets sealed with the lost key.
#[test]
fn no_new_sealing_key_replaces_a_lost_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.toml");
    let key = dir.path().join("users.key");
    let unset = "WARDGATE_TEST_KEY_THAT_IS_NOT_SET";
    let error = UserStore::open(&path, &key, Some(unset)).expect_err("env not set");
    assert!(error.to_string().contains(unset), "{error}");
    assert!(!key.exists(), "a stray key was written");

    let store = UserStore::open(&path, &key, None).expect("first start makes the key");
    let sealed = store.seal("alice", b"0123456789abcdefghij");
    store
        .add(User {
            name: "alice".into(),
            totp_secret: Some(sealed),
            ..User::default()
        })
        .expect("add");
    std::fs::remove_file(&key).expect("lose the key");
    let error = UserStore::open(&path, &key, None).expect_err("key lost");
    assert!(error.to_string().contains("restore it"), "{error}");
    assert!(!key.exists(), "a new key was made over sealed secrets");
}

#[test]
fn sealed_secret_opens_only_for_its_own_user_and_file_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = UserStore::open(
        &dir.path().join("users.toml"),
        &dir.path().join("users.key"),
        None,
    )
    .expect("open");
    let sealed = store.seal("alice", b"0123456789abcdefghij");
    let alice = User {
        name: "alice".into(),
        totp_secret: Some(sealed.clone()),
        ..User::default()
    };
    store.add(alice.clone()).expect("add");
    assert_eq!(
        store.totp_secret(&alice).expect("open").as_deref(),
        Some(&b"0123456789abcdefghij"[..])
    );
    let mallory = User {
        name: "mallory".into(),
        totp_secret: Some(sealed),
        ..User::default()
    };
    assert!(store.totp_secret(&mallory).is_err());
    let text = std::fs::read_to_string(dir.path().join("users.toml")).expect("read");
    assert!(!text.contains("0123456789abcdefghij"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("users.toml"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(store
        .add(User {
            name: "alice".into(),
            ..User::default()
        })
        .is_err());
}
