// swd_native::sgd_update on CUDA: the SGDS update (no reduction; no buffer without momentum).
#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"
#include "cuda/update_launch.cuh"

namespace swd::cuda {

void sgd_update(const SgdUpdateArgs& a) {
  if (a.params.empty()) return;
  const CheckedCall call(a, "swd_native::sgd_update (CUDA)", a.lr_tensor, a.grad_scale,
                         a.found_inf);

  const bool with_momentum = a.momentum != 0.0;
  std::vector<at::TensorList> lists = {a.params, a.grads};
  if (with_momentum) lists.push_back(a.momentum_buffers);
  const ChunkLayout layout = chunk_layout(lists, a.state_steps, {});
  const StepInputs inputs = call.scalars.step(a.lr, nullptr);
  const SgdHyper hyper{a.momentum, a.dampening, a.weight_decay, a.nesterov};
  const Bucket& bucket = call.bucket;
  CudaDtypePairs::dispatch(bucket.param_dtype, bucket.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    if (with_momentum) {
      launch_update<SgdRule<true>, P, S>(layout, hyper, inputs, call.scalars.amp(), a.maximize,
                                         a.params[0].options());
    } else {
      launch_update<SgdRule<false>, P, P>(layout, hyper, inputs, call.scalars.amp(), a.maximize,
                                          a.params[0].options());
    }
  });
}

}  // namespace swd::cuda
