//! Known-answer vectors from the RFC 6962 test data of
//! transparency-dev/merkle (testonly/constants.go, proof/verify_test.go),
//! plus exhaustive checks against a direct transcription of RFC 6962 §2.1.

use super::*;

fn h(s: &str) -> Hash {
    crate::record::unhex(s).unwrap().try_into().unwrap()
}

fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| crate::record::unhex(s).unwrap())
    .collect()
}

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn tree(n: usize) -> MerkleTree {
    let mut t = MerkleTree::new();
    for l in leaves().iter().cycle().take(n) {
        t.push(leaf_hash(l));
    }
    t
}

/// MTH exactly as RFC 6962 §2.1 writes it.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

#[test]
fn known_roots() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let t = tree(8);
    for (i, r) in ROOTS.iter().enumerate() {
        assert_eq!(t.root(i as u64 + 1).unwrap(), h(r), "size {}", i + 1);
    }
    assert_eq!(t.root(0).unwrap(), empty_root());
}

#[test]
fn known_inclusion_proofs() {
    let t = tree(8);
    // (1-based leaf, size, path) from proof/verify_test.go.
    let vectors: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            3,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            2,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    let ls = leaves();
    for (leaf, size, path) in vectors {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        assert_eq!(
            t.inclusion_proof(leaf - 1, size).unwrap(),
            want,
            "{leaf}/{size}"
        );
        let root = h(ROOTS[size as usize - 1]);
        let lh = leaf_hash(&ls[leaf as usize - 1]);
        verify_inclusion(&lh, leaf - 1, size, &want, &root).unwrap();
        // Corruptions: wrong index, size, leaf, root, extra or missing hash.
        assert!(verify_inclusion(&lh, leaf, size, &want, &root).is_err());
        assert!(verify_inclusion(&lh, leaf - 1, size * 2, &want, &root).is_err());
        assert!(verify_inclusion(&leaf_hash(b"x"), leaf - 1, size, &want, &root).is_err());
        assert!(verify_inclusion(&lh, leaf - 1, size, &want, &empty_root()).is_err());
        let mut longer = want.clone();
        longer.push(root);
        assert!(verify_inclusion(&lh, leaf - 1, size, &longer, &root).is_err());
        for i in 0..want.len() {
            let mut flipped = want.clone();
            flipped[i][0] ^= 8;
            assert!(verify_inclusion(&lh, leaf - 1, size, &flipped, &root).is_err());
            let mut shorter = want.clone();
            shorter.remove(i);
            assert!(verify_inclusion(&lh, leaf - 1, size, &shorter, &root).is_err());
        }
    }
}

#[test]
fn known_consistency_proofs() {
    let t = tree(8);
    let vectors: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (m, n, path) in vectors {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        assert_eq!(t.consistency_proof(m, n).unwrap(), want, "{m}->{n}");
        let (r1, r2) = (h(ROOTS[m as usize - 1]), h(ROOTS[n as usize - 1]));
        verify_consistency(m, n, &want, &r1, &r2).unwrap();
        if want.is_empty() {
            continue;
        }
        assert!(verify_consistency(m, n, &want, &r2, &r1).is_err());
        assert!(verify_consistency(m - 1, n, &want, &r1, &r2).is_err());
        assert!(verify_consistency(m, n, &[], &r1, &r2).is_err());
        assert!(verify_consistency(m, n, &want[..want.len() - 1], &r1, &r2).is_err());
        for i in 0..want.len() {
            let mut flipped = want.clone();
            flipped[i][0] ^= 16;
            assert!(verify_consistency(m, n, &flipped, &r1, &r2).is_err());
        }
    }
}

#[test]
fn every_proof_up_to_40_leaves_matches_the_rfc() {
    let t = tree(40);
    let hashes: Vec<Hash> = (0..40).map(|i| t.levels[0][i]).collect();
    for n in 1..=40u64 {
        let root = t.root(n).unwrap();
        assert_eq!(root, mth(&hashes[..n as usize]), "root {n}");
        for i in 0..n {
            let p = t.inclusion_proof(i, n).unwrap();
            verify_inclusion(&hashes[i as usize], i, n, &p, &root).unwrap();
        }
        for m in 0..=n {
            let p = t.consistency_proof(m, n).unwrap();
            verify_consistency(m, n, &p, &t.root(m).unwrap(), &root).unwrap();
            if m > 0 && m < n {
                let wrong = t.root(m - 1).unwrap();
                assert!(verify_consistency(m, n, &p, &wrong, &root).is_err());
            }
        }
    }
}

#[test]
fn out_of_range() {
    let t = tree(3);
    assert!(t.inclusion_proof(3, 3).is_err());
    assert!(t.inclusion_proof(0, 4).is_err());
    assert!(t.consistency_proof(2, 4).is_err());
    assert!(t.root(4).is_err());
}
