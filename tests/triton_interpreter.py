"""Run fla-core's Triton kernels on the CPU through Triton's interpreter (TRITON_INTERPRET=1), in fp32.

Import this module in a process whose environment has TRITON_INTERPRET=1 from the start, before any kernel
runs. The interpreter executes each kernel's Python body with NumPy, block by block, so the test runs fla's
own kernel logic (the chunked forms, the state passes, the WY backward) on the CPU. It has gaps that fla's
kernels hit; each patch below closes one, without editing fla or Triton files. Written against the Triton
pinned in requirements-interp.txt (3.6.0); `check_versions` refuses any other.

What the interpreter does NOT show: bf16 (it stores bf16 as raw bits and does arithmetic on them, so only
fp32 is checked here), the GPU compiler's code (e.g. fla issue #640's Hopper miscompile), the autotuner's
choice (the first config runs), and TileLang's backward kernel (Hopper only; the Triton one runs here).
"""

import ast
import os

if os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("tests/triton_interpreter.py needs TRITON_INTERPRET=1 in the environment before triton "
                       "is imported: run the checks through tests/test_fla_interpreter.py")

import triton.runtime.autotuner as autotuner
import triton.runtime.interpreter as interpreter

PINNED = {"triton": "3.6.0", "fla-core": "0.6.0"}


def check_versions() -> None:
    from importlib.metadata import version

    found = {name: version(name) for name in PINNED}
    if found != PINNED:
        raise RuntimeError(f"the interpreter patches are written for {PINNED}, found {found}: install "
                           "requirements-interp.txt into .interp-site (see the README's set-up line)")


# 1. Autotuning. The autotuner times each config on a GPU driver, and the interpreter has none ("0 active
#    drivers"). Keep the first config that fla's own pruning leaves for the shape, and skip the timing.
_prune_all = autotuner.Autotuner.prune_configs


def _first_config(self, kwargs, *args, **kw):
    return _prune_all(self, kwargs, *args, **kw)[:1]


autotuner.Autotuner.prune_configs = _first_config
autotuner.Autotuner._bench = lambda self, *args, config, **meta: [0.0, 0.0, 0.0]


# 2. Loop variables. Compiled Triton makes the variable of `for i in range(n)` / `tl.range` a scalar tensor;
#    the interpreter leaves it a Python int, so fla's `i_t.to(tl.int64)` in its state kernel fails with
#    "'int' object has no attribute 'to'". Rewrite each such loop to convert its variable first, as the
#    interpreter already does for the right-hand side of every assignment (tl.static_range stays an int,
#    as its variable is a compile-time constant in compiled Triton too).
class _LoopVariablesAsTensors(interpreter.ASTTransformer):
    def visit_For(self, node):
        node = self.generic_visit(node)
        static = (isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Attribute)
                  and node.iter.func.attr == "static_range")
        if isinstance(node.target, ast.Name) and not static:
            to_tensor = ast.Attribute(value=ast.Name(id="interpreter_semantic", ctx=ast.Load()), attr="to_tensor",
                                      ctx=ast.Load())
            convert = ast.Assign(targets=[ast.Name(id=node.target.id, ctx=ast.Store())],
                                 value=ast.Call(func=to_tensor, args=[ast.Name(id=node.target.id, ctx=ast.Load()),
                                                                      ast.Constant(value=False)], keywords=[]))
            node.body.insert(0, ast.copy_location(convert, node))
        return node


interpreter.FunctionRewriter.ast_transformer = _LoopVariablesAsTensors()
interpreter.InterpretedFunction.rewritten_fn.clear()  # nothing rewritten before the patch is kept


# 3. Scalars as indices. Triton 3.6's interpreter turns a scalar tensor into an int with int(array of shape
#    (1,)), which NumPy >= 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars") at
#    `range(NT)`; take the one element explicitly (what Triton 3.9 does).
_patch_tensor = interpreter._patch_lang_tensor


def _patch_tensor_with_index(tensor, scope):
    _patch_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


interpreter._patch_lang_tensor = _patch_tensor_with_index

# The kernels that ran (the interpreter's launch, warm-ups excluded): proof that fla's Triton code ran, not a
# PyTorch fallback.
KERNELS_RUN: list[str] = []
_launch = interpreter.InterpretedFunction.run


def _recording_launch(self, *args, grid, warmup, **kwargs):
    if not warmup:
        KERNELS_RUN.append(self.fn.__name__)
    return _launch(self, *args, grid=grid, warmup=warmup, **kwargs)


interpreter.InterpretedFunction.run = _recording_launch
