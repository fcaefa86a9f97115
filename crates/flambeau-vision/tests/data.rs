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
