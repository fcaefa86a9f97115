//! The NCCL backend (`--features nccl`). Compiled by `cargo xtask cuda check`; run where the
//! binary can start (libcuda and libnccl present): the refusals need no GPU, the duplicate-GPU
//! refusal one GPU, and the collectives two (they print why they skipped otherwise).
#![cfg(feature = "nccl")]

use std::thread;

use candle_core::cuda_backend::cudarc::driver::CudaContext;
use candle_core::{DType, Device, Tensor};
use flambeau_core::VarStore;
use flambeau_kernels::device::open_cuda;
use flambeau_parallel::{Backend, Collective, Error, NcclCollective, ReplicaGroup};

fn gpus() -> usize {
    CudaContext::device_count().map_or(0, |n| n as usize)
}

#[test]
fn refuses_devices_that_are_not_gpus() {
    let e = NcclCollective::group(&[Device::Cpu]).unwrap_err();
    assert!(matches!(e, Error::NotCuda { rank: 0, .. }), "{e}");
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let build = |_vb: flambeau_core::VarBuilder| -> flambeau_core::Result<identity::Id> {
        Ok(identity::Id)
    };
    let e = ReplicaGroup::with_backend(&vs, build, &[Device::Cpu, Device::Cpu], Backend::Nccl)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("needs CUDA devices"), "{e}");
}

#[test]
fn refuses_a_gpu_listed_twice() {
    if gpus() == 0 {
        eprintln!("skipped: no GPU");
        return;
    }
    let (a, b) = (open_cuda(0).unwrap(), open_cuda(0).unwrap());
    let e = NcclCollective::group(&[a, b]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DuplicateGpu {
                ordinal: 0,
                first: 0,
                second: 1
            }
        ),
        "{e}"
    );
}

#[test]
fn sums_and_broadcasts_like_the_host_backend() {
    if gpus() < 2 {
        eprintln!("skipped: NCCL needs two GPUs, this machine has {}", gpus());
        return;
    }
    let devices: Vec<Device> = (0..2).map(|i| open_cuda(i).unwrap()).collect();
    let ranks = NcclCollective::group(&devices).unwrap();
    let threads: Vec<_> = ranks
        .into_iter()
        .map(|r| {
            thread::spawn(move || {
                let device = r.device().clone();
                let mut c = r.join().unwrap();
                let k = c.rank() as f32 + 1.0;
                let f = Tensor::new(&[[k, 2.0 * k], [3.0 * k, 4.0 * k]], &device).unwrap();
                let i = Tensor::new(&[k as i64 * 10], &device).unwrap();
                let h = f.to_dtype(DType::BF16).unwrap();
                let all = c.all_reduce_sum(&[f.clone(), i.clone(), h]).unwrap();
                let red = c.reduce_sum(&[f.clone(), i.clone()], 1).unwrap();
                let bc = c.broadcast(&[f, i], 0).unwrap();
                let v = |t: &Tensor| {
                    t.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                };
                (
                    c.rank(),
                    all.iter().map(v).collect::<Vec<_>>(),
                    red.map(|r| r.iter().map(v).collect::<Vec<_>>()),
                    bc.iter().map(v).collect::<Vec<_>>(),
                )
            })
        })
        .collect();
    for t in threads {
        let (rank, all, red, bc) = t.join().unwrap();
        assert_eq!(all[0], [3.0, 6.0, 9.0, 12.0]);
        assert_eq!(all[1], [30.0]);
        assert_eq!(all[2], [3.0, 6.0, 9.0, 12.0]);
        assert_eq!(red.is_some(), rank == 1);
        if let Some(red) = red {
            assert_eq!(red, [vec![3.0, 6.0, 9.0, 12.0], vec![30.0]]);
        }
        assert_eq!(bc, [vec![1.0, 2.0, 3.0, 4.0], vec![10.0]]);
    }
}

/// A model without parameters, for the refusals (nothing is built before them).
mod identity {
    pub struct Id;
    impl candle_core::ModuleT for Id {
        fn forward_t(
            &self,
            x: &candle_core::Tensor,
            _: bool,
        ) -> candle_core::Result<candle_core::Tensor> {
            Ok(x.clone())
        }
    }
}
