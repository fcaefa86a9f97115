//! `parallel_apply`: each module on its input, all at once, one thread per module.

use candle_core::{ModuleT, Tensor};

use crate::Result;

/// `modules[i].forward_t(inputs[i], train)` for every `i`, concurrently (one scoped thread per
/// module after the first, which runs on the calling thread). Pairs beyond the shorter list are
/// ignored, as `zip` does; the first error is returned.
pub fn parallel_apply<M: ModuleT + Sync>(
    modules: &[&M],
    inputs: &[Tensor],
    train: bool,
) -> Result<Vec<Tensor>> {
    let pairs: Vec<(&M, &Tensor)> = modules.iter().copied().zip(inputs).collect();
    let Some(((first, first_input), rest)) = pairs.split_first() else {
        return Ok(Vec::new());
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = rest
            .iter()
            .map(|(m, x)| scope.spawn(move || m.forward_t(x, train)))
            .collect();
        let mut outputs = vec![first.forward_t(first_input, train)?];
        for handle in others {
            // A panic in a replica's forward is a panic of this call, as it would be inline.
            let out = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            outputs.push(out?);
        }
        Ok(outputs)
    })
}
