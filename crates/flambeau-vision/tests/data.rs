//! Datasets and the data loader: determinism, resume, formats.

use std::sync::Arc;

use candle_core::Device;
use flambeau_vision::data::{
    Augment, Cifar10, DataLoader, Dataset, ImageFolder, LoaderConfig, Normalize, Synthetic,
};

#[test]
fn synthetic_is_deterministic_balanced_and_split() {
    let a = Synthetic::train(100, 7);
    let b = Synthetic::train(100, 7);
    assert_eq!(a.get(13).unwrap(), b.get(13).unwrap());
    assert_ne!(
        a.get(13).unwrap().pixels,
        Synthetic::train(100, 8).get(13).unwrap().pixels
    );
    assert_ne!(
        a.get(13).unwrap().pixels,
        Synthetic::val(100, 7).get(13).unwrap().pixels
    );
    let mut counts = [0; 10];
    for i in 0..100 {
        let s = a.get(i).unwrap();
        assert_eq!((s.channels, s.height, s.width), (3, 32, 32));
        assert!(s.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        counts[s.label as usize] += 1;
    }
    assert_eq!(counts, [10; 10]);
    assert!(a.get(100).is_err());
}

fn loader(seed: u64) -> DataLoader {
    let cfg = LoaderConfig {
        batch_size: 8,
        augment: Some(Augment::default()),
        normalize: Some(Normalize::cifar10()),
        seed,
        ..Default::default()
    };
    DataLoader::new(Arc::new(Synthetic::train(50, 1)), cfg, &Device::Cpu).unwrap()
}

fn epoch_batches(l: &mut DataLoader) -> Vec<(Vec<usize>, Vec<f32>)> {
    l.epoch()
        .map(|b| {
            let b = b.unwrap();
            (
                b.indices,
                b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn loader_covers_the_dataset_once_per_epoch_in_a_seeded_order() {
    let mut l = loader(3);
    assert_eq!(l.len(), 7);
    let e0 = epoch_batches(&mut l);
    assert_eq!(e0.len(), 7);
    let mut seen: Vec<usize> = e0.iter().flat_map(|(i, _)| i.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    let e1 = epoch_batches(&mut l);
    assert_ne!(e0[0].0, e1[0].0, "a new order each epoch");
    assert_eq!(epoch_batches(&mut loader(3)), e0, "same seed, same batches");
    assert_ne!(epoch_batches(&mut loader(4))[0].0, e0[0].0);
}

#[test]
fn loader_resumes_mid_epoch_exactly() {
    let mut straight = loader(5);
    epoch_batches(&mut straight);
    let expected = epoch_batches(&mut straight);

    let mut first = loader(5);
    epoch_batches(&mut first);
    let mut it = first.epoch();
    let head: Vec<_> = (0..3).map(|_| it.next().unwrap().unwrap()).collect();
    drop(it);
    let saved = first.state();
    assert_eq!((saved.epoch, saved.batch), (1, 3));

    let mut resumed = loader(999);
    resumed.set_state(saved);
    let tail = epoch_batches(&mut resumed);
    assert_eq!(head.len() + tail.len(), expected.len());
    for (b, e) in head.iter().zip(&expected) {
        assert_eq!(b.indices, e.0);
    }
    assert_eq!(&tail[..], &expected[3..]);
    assert_eq!(resumed.state().epoch, 2);
}

/// A loader over `n` examples with batches of `batch`.
fn loader_of(n: usize, batch: usize) -> DataLoader {
    let cfg = LoaderConfig {
        batch_size: batch,
        augment: Some(Augment::default()),
        seed: 5,
        ..Default::default()
    };
    DataLoader::new(Arc::new(Synthetic::train(n, 1)), cfg, &Device::Cpu).unwrap()
}

#[test]
fn shards_of_w_ranks_make_the_batches_of_one_loader_w_times_larger() {
    // 48 examples: 3 ranks × batch 4 = one loader with batch 12, batch for batch, augmentation
    // included, every epoch.
    let mut whole = loader_of(48, 12);
    let mut ranks: Vec<DataLoader> = (0..3)
        .map(|r| loader_of(48, 4).sharded(r, 3).unwrap())
        .collect();
    assert!(ranks
        .iter()
        .all(|l| l.len() == whole.len() && l.examples() == 16));
    for _epoch in 0..2 {
        let expected = epoch_batches(&mut whole);
        let shards: Vec<_> = ranks.iter_mut().map(epoch_batches).collect();
        for (k, (indices, pixels)) in expected.iter().enumerate() {
            let per_image = pixels.len() / indices.len();
            let mut seen = Vec::new();
            for shard in &shards {
                let (ix, px) = &shard[k];
                for (j, &i) in ix.iter().enumerate() {
                    let at = indices.iter().position(|&e| e == i).expect("in the batch");
                    assert_eq!(
                        px[j * per_image..(j + 1) * per_image],
                        pixels[at * per_image..(at + 1) * per_image],
                        "example {i}: same augmentation as in the whole batch"
                    );
                    seen.push(i);
                }
            }
            seen.sort();
            let mut want = indices.clone();
            want.sort();
            assert_eq!(seen, want, "batch {k}");
        }
    }
}

#[test]
fn shards_are_padded_like_distributed_sampler() {
    // 10 examples over 3 ranks: 4 each, the last two positions wrapping to the order's start.
    let l = loader_of(10, 4);
    let order = l.order(0);
    let mut all = Vec::new();
    for r in 0..3 {
        let mut shard = loader_of(10, 4).sharded(r, 3).unwrap();
        assert_eq!(shard.examples(), 4);
        let ix: Vec<usize> = epoch_batches(&mut shard)
            .into_iter()
            .flat_map(|b| b.0)
            .collect();
        assert_eq!(ix.len(), 4);
        all.extend(ix);
    }
    all.sort();
    let mut want = order.clone();
    want.extend(&order[..2]);
    want.sort();
    assert_eq!(all, want);
    assert!(loader_of(10, 4).sharded(3, 3).is_err());
}

#[test]
fn cifar10_binary_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for label in [3u8, 9] {
        bytes.push(label);
        bytes.extend((0..3072).map(|i| (i % 256) as u8));
    }
    std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let ds = Cifar10::test(dir.path()).unwrap();
    assert_eq!(ds.len(), 2);
    let s = ds.get(1).unwrap();
    assert_eq!(s.label, 9);
    assert_eq!(s.pixels[1], 1.0 / 255.0);
    assert_eq!(s.pixels[1024], 0.0); // the green plane starts over at byte 1024 % 256
    std::fs::write(dir.path().join("test_batch.bin"), &bytes[..100]).unwrap();
    let err = Cifar10::test(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a whole number"), "{err}");
    let err = Cifar10::train(dir.path()).unwrap_err().to_string();
    assert!(err.contains("data_batch_1.bin not found"), "{err}");
}

#[test]
fn image_folder_reads_classes_sorted() {
    let dir = tempfile::tempdir().unwrap();
    for (class, color) in [("zebra", [250u8, 0, 0]), ("ant", [0, 0, 250])] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        let img = image::RgbImage::from_pixel(20, 10, image::Rgb(color));
        img.save(dir.path().join(class).join("a.png")).unwrap();
    }
    std::fs::write(dir.path().join("ant").join("notes.txt"), "not an image").unwrap();
    let ds = ImageFolder::new(dir.path(), 16).unwrap();
    assert_eq!(ds.classes(), vec!["ant", "zebra"]);
    assert_eq!(ds.len(), 2);
    let s = ds.get(0).unwrap();
    assert_eq!((s.label, s.height, s.width), (0, 16, 16));
    assert!(
        (s.pixels[2 * 256] - 250.0 / 255.0).abs() < 1e-6,
        "blue plane of the ant"
    );
    assert!(ImageFolder::new(&dir.path().join("missing"), 16).is_err());
}
