//! Cache-blocked matrix transpose.

use std::mem::MaybeUninit;

/// Side of the square tiles: 16×16 f32 tiles are one 1 KiB block on each side.
const TILE: usize = 16;

/// `dst [cols, rows] = srcᵀ` for a row-major `src [rows, cols]` (every element of `dst`
/// written).
pub fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [MaybeUninit<T>]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r].write(src[r * cols + c]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transpose;
    use std::mem::MaybeUninit;

    #[test]
    fn transposes_non_square_and_ragged_tiles() {
        let (rows, cols) = (37, 20);
        let src: Vec<u32> = (0..(rows * cols) as u32).collect();
        let mut dst = vec![MaybeUninit::new(0); rows * cols];
        transpose(&src, rows, cols, &mut dst);
        // SAFETY: initialised above.
        let dst: Vec<u32> = dst.iter().map(|v| unsafe { v.assume_init() }).collect();
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[c * rows + r], src[r * cols + c]);
            }
        }
    }
}
