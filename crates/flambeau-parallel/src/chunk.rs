//! `scatter` and `gather`: a batch split as `torch.chunk` splits it, outputs concatenated on one
//! device.

use candle_core::{Device, Tensor};
use flambeau_kernels::device::transfer;

use crate::{Error, Result};

/// The sizes `torch.chunk(n rows, k)` produces: chunks of `ceil(n / k)` rows, the last one
/// smaller, and fewer than `k` chunks when the rows run out (10 over 4 → 3, 3, 3, 1; 6 over 4 →
/// 2, 2, 2). Empty when `n` or `k` is 0.
pub fn chunk_sizes(n: usize, k: usize) -> Vec<usize> {
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let size = n.div_ceil(k);
    let mut sizes = Vec::with_capacity(k);
    let mut left = n;
    while left > 0 {
        let s = size.min(left);
        sizes.push(s);
        left -= s;
    }
    sizes
}

/// Splits `tensor` along `dim` as `torch.chunk` does and puts chunk `i` on `devices[i]`
/// (`nn.parallel.scatter`). Returns at most `devices.len()` chunks — fewer when the batch has
/// fewer rows than there are devices' worth of chunks.
pub fn scatter(tensor: &Tensor, devices: &[Device], dim: usize) -> Result<Vec<Tensor>> {
    if devices.is_empty() {
        return Err(Error::NoDevices);
    }
    let shape = tensor.dims().to_vec();
    let Some(&n) = shape.get(dim) else {
        return Err(Error::Scatter {
            shape,
            dim,
            reason: "the tensor has no such dimension",
        });
    };
    if n == 0 {
        return Err(Error::Scatter {
            shape,
            dim,
            reason: "the dimension is empty",
        });
    }
    let mut start = 0;
    chunk_sizes(n, devices.len())
        .into_iter()
        .zip(devices)
        .map(|(len, device)| {
            let chunk = transfer(&tensor.narrow(dim, start, len)?, device)?;
            start += len;
            Ok(chunk)
        })
        .collect()
}

/// Concatenates `outputs` along `dim` on `device` (`nn.parallel.gather`); gradients flow back to
/// each output's device.
pub fn gather(outputs: &[Tensor], device: &Device, dim: usize) -> Result<Tensor> {
    if outputs.is_empty() {
        return Err(Error::NothingToGather);
    }
    let moved = outputs
        .iter()
        .map(|t| transfer(t, device))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&moved, dim)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_torch_chunk() {
        assert_eq!(chunk_sizes(10, 4), [3, 3, 3, 1]);
        assert_eq!(chunk_sizes(6, 4), [2, 2, 2]);
        assert_eq!(chunk_sizes(8, 4), [2, 2, 2, 2]);
        assert_eq!(chunk_sizes(3, 4), [1, 1, 1]);
        assert_eq!(chunk_sizes(7, 1), [7]);
        assert_eq!(chunk_sizes(5, 3), [2, 2, 1]);
        assert!(chunk_sizes(0, 3).is_empty());
        assert!(chunk_sizes(3, 0).is_empty());
    }

    #[test]
    fn scatter_then_gather_is_the_batch() -> Result<()> {
        let x = Tensor::arange(0f32, 20.0, &Device::Cpu)?.reshape((10, 2))?;
        let devices = vec![Device::Cpu; 4];
        let parts = scatter(&x, &devices, 0)?;
        let rows: Vec<usize> = parts.iter().map(|p| p.dims()[0]).collect();
        assert_eq!(rows, [3, 3, 3, 1]);
        let back = gather(&parts, &Device::Cpu, 0)?;
        assert_eq!(back.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        let six = scatter(&x.narrow(0, 0, 6)?, &devices, 0)?;
        assert_eq!(six.len(), 3);
        Ok(())
    }

    #[test]
    fn scatter_refuses_what_it_cannot_split() {
        let x = Tensor::zeros((0, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = scatter(&x, &[Device::Cpu], 0).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = scatter(&x, &[Device::Cpu], 3).unwrap_err();
        assert!(e.to_string().contains("no such dimension"), "{e}");
        assert!(matches!(scatter(&x, &[], 0), Err(Error::NoDevices)));
        assert!(matches!(
            gather(&[], &Device::Cpu, 0),
            Err(Error::NothingToGather)
        ));
    }
}
