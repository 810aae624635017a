// Built with -DNDEBUG, as libtorch is: RecordFunction has a debug-only member, so without it
// this file and libtorch would disagree on its layout.
//
// gradmem's native recorder: every op frame (RecordFunction) and every allocation and free
// (c10's memory reporting) seen in C++, each allocation attributed to the op that made it
// when it happens. Only allocations, frees, claimed op outputs and the steps they refer
// to are handed to Python, once, when the capture ends (see loader.py and engine.py).
//
// Why a ProfilerStateBase: torch casts whatever sits in the PROFILER_STATE debug-info slot
// to ProfilerStateBase (profilerType(), config()), so a bare MemoryReportingInfoBase there
// would be read as the wrong type. Our state reports profiler type NONE, so neither the
// legacy nor the kineto profiler casts it further.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/SavedTensorHooks.h>
#include <ATen/core/grad_mode.h>
#include <ATen/record_function.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/node.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/profiler/orchestration/observer.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <typeindex>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <unistd.h>

// torch's own wrapper of a tensor as a Python object (torch/csrc/autograd/python_variable.h,
// in libtorch_python, which every extension links): declared here rather than included, as
// that header pulls in torch's whole pybind layer and doubles the build time
PyObject* THPVariable_Wrap(const at::TensorBase& var);
extern PyObject* THPVariableClass;   // torch.Tensor, for a type check
c10::impl::PyInterpreter* getPyInterpreter();   // torch/csrc/PyInterpreter.h, likewise
namespace torch::autograd {   // python_cpp_function.h, likewise
PyObject* functionToPyObject(const c10::intrusive_ptr<Node>& cdata);
}

namespace py = pybind11;
using torch::profiler::impl::ActiveProfilerType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;
using torch::profiler::impl::ProfilerStateBase;

namespace {

constexpr int kMaxPreview = 16;   // as gradmem/capture/values.py MAX_PREVIEW
const char* kEvaluate = "autograd::engine::evaluate_function: ";

int64_t now_ns() {   // CLOCK_MONOTONIC: the clock time.perf_counter_ns reads on Linux
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

// -- what one op name is --------------------------------------------------------------------
struct OpInfo {
  std::string full;     // as RecordFunction names it
  std::string shortn;   // as gradmem's Python path names it ("mm" for "aten::mm")
  bool composite = false;   // CompositeImplicitAutograd: decomposes above the Python key
  bool factory = false;     // no Tensor argument in its schema
  bool evaluate = false;    // the engine's "evaluate_function: X" frame
  bool uninitialized = false;   // empty and friends: no value preview
};

struct Step {
  int64_t t;
  int32_t op;          // OpInfo index (for a node: the node's name)
  int8_t kind;         // 0 op, 1 backward node, 2 a step Python began
  int64_t seq_nr;      // backward node's sequence number (-1 unknown)
  int32_t backward;    // backward call index when it began inside one, else 0
  bool referenced = false;
  std::string label;   // for kind 2
};

struct Alloc {
  int64_t t, t_free = -1, serial, serial_free = -1, nbytes, sid = 0;
  void* ptr;
  int32_t op;          // attributed op (-1: outside any op frame)
  int8_t device_type, device_index;
  bool claimed = false, factory = false, grad_args = false, recompute = false;
  bool by_python = false;   // claimed by a Python hook (a pack) before its op returned
  int32_t claim_op = -1;
  std::string dtype, value;
  std::vector<int64_t> shape;
};

// a tensor requiring grad that the program handed to or got from a top-level op: what
// the Python engine's function watcher records (gradmem/capture/facts.py)
struct Fact {
  int64_t t, serial, sid, seq;   // seq: its grad_fn's sequence number (-1: a leaf)
  int64_t output_nr;
  std::string node;              // its grad_fn's name ("" for a leaf)
};

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

struct PairHash {
  size_t operator()(const std::pair<int64_t, int64_t>& p) const {
    return std::hash<int64_t>()(p.first) * 1000003u ^ std::hash<int64_t>()(p.second);
  }
};

// what a fact needs from a tensor, read before the recorder's lock is taken (a Python
// node's name() takes the GIL)
struct Seen {
  at::Tensor t;
  int64_t seq, output_nr;
  std::string node;
};

// a leaf whose gradient is watched: what the Python engine's leaf hooks record
// (gradmem/capture/grads.py), read when its AccumulateGrad node ends
struct LeafWatch {
  WeakImpl leaf;
  int64_t sid;
};

struct LeafEvent {
  int64_t t, serial, target;
  int64_t grad_in, grad;            // storage ids (0: not an allocation of the capture)
  std::vector<int64_t> shape_in, shape;
  bool has_in, has_grad;
  std::string value;                // the .grad's values as it landed (small ones)
  std::optional<WeakImpl> in_ref, grad_ref;   // for Python to name, when the id is 0
};

struct AllocatorEvent {
  int64_t t, nbytes, total, serial;
  void* ptr;
  int8_t device_type;
};

struct NodeEnd {
  int64_t t, serial;
  std::vector<int64_t> grads_in, grads_out;
  std::vector<std::string> values_in, values_out;   // small gradients' values, every digit ("" none)
};

struct Frame {
  c10::intrusive_ptr<torch::autograd::Node> node;   // an evaluate_function frame's node
  uintptr_t hook = 0;                                // and the post-hook we put on it
  int32_t op;        // attributed op for allocations made here (-1 none)
  int64_t serial;    // step of this frame (-1: none yet)
  bool boundary;     // a backward node (evaluate_function or BACKWARD_FUNCTION)
  bool attributed;   // this frame is the op its allocations belong to
  int64_t seq_lo = -1;   // a top-level op: the autograd sequence number when it began
  bool recompute = false;   // a forward op run again inside a backward node (checkpoint)
  int32_t own = -1;         // this frame's own op (RecordFunction's name), interned at its start
  const at::RecordFunction* fn = nullptr;   // the frame's RecordFunction: its end is told by its address
};

// the backward nodes a top-level op made: those numbered [lo, hi) on this thread (autograd
// numbers each node it makes from a thread-local counter). Python discovers nodes only at
// a backward call; this puts each back at the op that made it, inside its module's span.
struct OpNodes {
  int64_t t, serial, lo, hi;
};

// saved-tensor hooks' records (what gradmem/capture/saved.py emits on the Python engine)
struct PackRec {
  int64_t t, serial, pid, sid;   // sid 0: no storage id
  std::vector<int64_t> shape, stride;
  bool has_stride;
  c10::ScalarType dtype;
  int64_t numel, element_size;
  std::string value;             // exact digits of a small tensor ("" none)
  bool checkpoint;               // torch.utils.checkpoint packed it (kept_for)
};

struct PackUse {   // an unpack (node_serial: the running node's step, -1 none) or a release
  int64_t t, serial, pid, node_serial;
};

// the process's resident memory at a moment (what resident.py samples on the Python engine)
struct RssSample {
  int64_t t, serial, rss;
};

// a walked module's parameter, whose .grad names.py names after each backward call
struct NamedParam {
  int32_t name;                       // index into Recorder::param_names
  WeakImpl param;
  const c10::StorageImpl* storage;    // the parameter's storage when it was walked
};

// a .grad named here: a NAME event ("<parameter>.grad", source grad)
struct GradName {
  int64_t t, serial, sid;
  int32_t name;
  std::vector<int64_t> shape;
};

// a module call's start or end, as modules.py's ModuleWatcher emits it
struct ModuleRec {
  int64_t t, serial;
  int32_t path;                   // index into module_paths
  bool exit;
  std::vector<int64_t> outputs;   // an exit's output storages
};

// A change of the user's line behind the top-level ops (the Python engine's SOURCE event)
struct SourceRec {
  int64_t t, serial;
  int32_t place;   // index into Sources::places, -1: no frame outside torch and gradmem
};

// The user's lines, read from Python's frames with the GIL held (and only then touched).
// Code objects are held, so that a pointer seen once always means the same code.
struct Sources {
  std::vector<std::string> skip;   // torch's and gradmem's folders (names.py SKIP_DIRS)
  std::unordered_map<PyObject*, bool> user;   // code object -> is it the user's
  std::unordered_map<std::pair<int64_t, int64_t>, int32_t, PairHash> ids;   // (code, line) -> place
  std::vector<py::object> held;     // the code objects of `user`
  std::vector<py::tuple> places;    // (file, line, function)
};

struct Recorder;
Recorder* g_rec = nullptr;   // the running recorder (at most one)

struct Recorder {
  std::recursive_mutex mu;   // recursive: a pack's release can run inside a locked section
  std::vector<OpInfo> ops;
  std::deque<std::string> op_names;   // each op's name once: op_index's keys point into it (a deque never moves them)
  std::unordered_map<std::string_view, int32_t> op_index;
  std::unordered_map<const char*, int32_t> op_by_ptr;   // an op's name by its schema's pointer, which is stable
  std::vector<Step> steps;
  std::vector<Alloc> allocs;
  std::vector<AllocatorEvent> allocator;
  std::vector<NodeEnd> node_ends;
  std::unordered_map<void*, size_t> live;   // ptr -> allocs index
  std::vector<Fact> facts;
  std::unordered_set<std::pair<int64_t, int64_t>, PairHash> fact_seen;   // (sid, seq)
  std::vector<WeakImpl> outputs;   // non-leaf tensors with a fact: Python hooks the live ones
  // tensors whose storage the allocator never showed (made before the capture): Python
  // records their facts; keyed by (TensorImpl, grad_fn seq) so each is handed over once
  std::unordered_map<std::pair<int64_t, int64_t>, WeakImpl, PairHash> foreign;
  std::vector<WeakImpl> foreign_new;
  // inputs of top-level ops that need no grad, on storages the allocator never showed (made
  // before the capture): handed to Python's `see` at the op, once each, as the Python engine
  // tracks every input it meets
  std::unordered_map<const c10::StorageImpl*, c10::weak_intrusive_ptr<c10::StorageImpl>> foreign_inputs;
  py::object see;
  bool want_inputs = true;
  std::unordered_map<const torch::autograd::Node*, LeafWatch> leaves;   // AccumulateGrad -> leaf
  std::unordered_set<int64_t> leaf_sids_given;   // leaves whose facts Python recorded
  std::vector<LeafEvent> leaf_events;
  std::vector<OpNodes> op_nodes;
  size_t leaf_named = 0;   // leaf events before this were handed to Python already
  int64_t last_serial = -1;
  int32_t backward = 0;       // set by Python: backward call index while one runs
  bool create_graph = false;  // set by Python: the running backward call builds a graph
  std::atomic<int64_t>* next_sid;
  std::vector<PackRec> packs;
  std::vector<PackUse> unpacks, releases;
  std::vector<ModuleRec> modules;
  std::vector<std::string> module_paths;
  std::unordered_map<PyObject*, int32_t> module_index;   // by the path's str object, held below
  std::vector<py::object> module_path_objects;
  std::vector<RssSample> rss;
  Sources src;
  std::vector<SourceRec> sources;
  int32_t source_last = -2;   // the place last recorded (-2: none yet)
  std::vector<std::vector<NamedParam>> param_groups;   // one per walked module (names.py)
  std::vector<std::string> param_names;
  std::vector<GradName> grad_names;
  std::unordered_set<std::pair<int64_t, int64_t>, PairHash> grad_named;   // (sid, name)
  int64_t next_pid = 1;

  int32_t intern(const at::RecordFunction& fn) {
    const char* name = fn.name();
    auto it = op_by_ptr.find(name);
    if (it != op_by_ptr.end() && std::strcmp(ops[it->second].full.c_str(), name) == 0) return it->second;
    auto jt = op_index.find(std::string_view(name));
    int32_t idx = jt != op_index.end() ? jt->second : add_op(name, fn.operator_name());
    // a node's name (and the engine's evaluate_function frame's) is made for each call: its
    // pointer says nothing, and keeping it would grow this map by every node run
    if (fn.scope() == at::RecordScope::FUNCTION && !ops[idx].evaluate) op_by_ptr[name] = idx;
    return idx;
  }

  int32_t add_op(const std::string& full, const std::optional<c10::OperatorName>& opname) {
    OpInfo info;
    info.full = full;
    auto colon = full.rfind("::");
    info.shortn = colon == std::string::npos ? full : full.substr(colon + 2);
    info.evaluate = full.rfind(kEvaluate, 0) == 0;
    if (info.evaluate) info.shortn = full.substr(std::strlen(kEvaluate));
    if (opname) {
      auto handle = c10::Dispatcher::singleton().findOp(*opname);
      if (handle) {
        info.composite = handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
        if (handle->hasSchema()) {
          bool tensor_arg = false;
          for (const auto& arg : handle->schema().arguments())
            if (arg.type()->str().find("Tensor") != std::string::npos) tensor_arg = true;
          info.factory = !tensor_arg;
        }
      }
    }
    static const char* uninit[] = {"empty", "empty_like", "empty_strided", "empty_permuted",
                                   "new_empty", "new_empty_strided"};
    for (auto u : uninit) if (info.shortn == u) info.uninitialized = true;
    if (info.shortn == "lift_fresh" || info.shortn == "lift_fresh_copy" || info.shortn == "lift")
      info.factory = true;
    int32_t idx = (int32_t)ops.size();
    ops.push_back(std::move(info));
    op_index.emplace(std::string_view(op_names.emplace_back(full)), idx);
    return idx;
  }

  int64_t new_step(int32_t op, int8_t kind, int64_t seq_nr) {
    Step s;
    s.t = now_ns(); s.op = op; s.kind = kind; s.seq_nr = seq_nr; s.backward = backward;
    steps.push_back(std::move(s));
    last_serial = (int64_t)steps.size() - 1;
    return last_serial;
  }

  int64_t referenced = 0;   // steps that will be exported (what the trace will number)

  void ref(int64_t serial) {
    if (serial >= 0 && !steps[serial].referenced) {
      steps[serial].referenced = true;
      ++referenced;
    }
  }
};

// A pointer, so that the thread-local needs no initialisation wrapper at each access (a
// thread_local vector calls one every time); the vector of a thread that ends is not freed.
thread_local std::vector<Frame>* t_frames_ptr = nullptr;

std::vector<Frame>& frames() {
  std::vector<Frame>*& p = t_frames_ptr;
  if (p == nullptr) p = new std::vector<Frame>();
  return *p;
}
thread_local bool t_busy = false;   // gradmem's own work (a value preview): not recorded
// torch.tensor(data) runs empty and to with the Python dispatch key excluded (so the Python
// engine's dispatch mode never meets them), then lift_fresh and detach_, all top-level ops:
// one step, named lift_fresh, as on the Python engine. The step of such a sequence while it
// runs, else -1
thread_local int64_t t_tensor_call = -1;

// gradmem's own ops and allocations while it lives, on this thread: not recorded. Cheaper
// than at::RecordFunctionGuard, whose every use rebuilds torch's callback lists twice
struct Busy {
  bool was;
  Busy() : was(t_busy) { t_busy = true; }
  ~Busy() { t_busy = was; }
};

int64_t current_serial_locked(Recorder& r) {
  const std::vector<Frame>& fr = frames();
  const Frame* f = fr.empty() ? nullptr : &fr.back();
  int64_t serial = (f != nullptr && f->serial >= 0) ? f->serial : r.last_serial;
  r.ref(serial);
  return serial;
}

int64_t node_serial_locked() {   // the backward node running on this thread, -1 none
  const std::vector<Frame>& fr = frames();
  for (auto it = fr.rbegin(); it != fr.rend(); ++it)
    if (it->boundary) return it->serial;
  return -1;
}

c10::DebugInfoBase* g_state = nullptr;   // our State, while it runs

// only the threads that carry our state (the capturing thread, and the engine's threads,
// to which autograd hands its thread-local state) are recorded
bool ours() {
  return g_rec != nullptr && c10::ThreadLocalDebugInfo::get(c10::DebugInfoKind::PROFILER_STATE) == g_state;
}


int64_t claim_locked(Recorder& r, const at::Tensor& t, int32_t op, bool value);

// A node's end, as the Python engine's node post-hook sees it: after the engine has
// checked (and summed to shape) the gradients it produced, before they go on. Put on the
// node for the span of its evaluate_function frame only.
std::string preview(const at::Tensor& t, bool exact = false);
std::string dtype_name(c10::ScalarType st);

void leaf_event(Recorder& r, const torch::autograd::Node* node, int64_t serial,
                const torch::autograd::variable_list& inputs) {
  auto it = r.leaves.find(node);
  if (it == r.leaves.end()) return;
  auto strong = it->second.leaf.lock();
  if (!strong) return;
  at::Tensor leaf(std::move(strong));
  LeafEvent e{now_ns(), serial, it->second.sid, 0, 0, {}, {}, false, false, {}, std::nullopt, std::nullopt};
  if (!inputs.empty() && inputs[0].defined()) {
    e.has_in = true;
    e.grad_in = claim_locked(r, inputs[0], -1, false);
    e.shape_in = inputs[0].sizes().vec();
    if (e.grad_in == 0) e.in_ref = WeakImpl(inputs[0].getIntrusivePtr());
  }
  const at::Tensor& g = leaf.grad();
  if (g.defined()) {
    e.has_grad = true;
    e.grad = claim_locked(r, g, -1, false);
    e.shape = g.sizes().vec();
    e.value = preview(g);
    if (e.grad == 0) e.grad_ref = WeakImpl(g.getIntrusivePtr());
  }
  r.leaf_events.push_back(std::move(e));
}

struct EndHook : public torch::autograd::FunctionPostHook {
  int64_t serial;
  const torch::autograd::Node* node;
  EndHook(int64_t s, const torch::autograd::Node* n) : serial(s), node(n) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& inputs) override {
    if (g_rec == nullptr) return outputs;
    Recorder& r = *g_rec;
    std::lock_guard<std::recursive_mutex> g(r.mu);
    r.ref(serial);   // every node that ran is a step, as on the Python engine
    // a leaf's gradient hooks fire inside AccumulateGrad, before its post-hook: first, as there
    if (!r.leaves.empty()) leaf_event(r, node, serial, inputs);
    NodeEnd e{now_ns(), serial, {}, {}, {}, {}};
    for (const auto& t : inputs) {   // what a backward rule is checked on (graph.py: exact_now)
      e.grads_in.push_back(t.defined() ? claim_locked(r, t, -1, false) : 0);
      e.values_in.push_back(t.defined() ? preview(t, true) : std::string());
    }
    for (const auto& t : outputs) {
      e.grads_out.push_back(t.defined() ? claim_locked(r, t, -1, false) : 0);
      e.values_out.push_back(t.defined() ? preview(t, true) : std::string());
    }
    r.node_ends.push_back(std::move(e));
    return outputs;
  }
};

// -- tensor facts ------------------------------------------------------------------------------
// Outside the lock: a tensor's grad_fn, its sequence number and name (c10::Error from torch,
// say a view made under no_grad and modified in place, means no fact, as in Python).
void gather(const at::Tensor& t, std::vector<Seen>& out) {
  if (!t.defined() || !t.requires_grad()) return;
  try {
    const auto& fn = t.grad_fn();
    if (fn) {
      out.push_back({t, (int64_t)fn->sequence_nr(), (int64_t)t.output_nr(), fn->name()});
    } else {
      out.push_back({t, -1, 0, std::string()});
    }
  } catch (...) {
  }
}

void gather_values(c10::ArrayRef<c10::IValue> values, std::vector<Seen>& out) {
  for (const auto& v : values) {
    if (v.isTensor()) {
      gather(v.toTensor(), out);
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) gather(t, out);
    }
  }
}

bool is_evaluate(const at::RecordFunction& fn) {
  return std::strncmp(fn.name(), kEvaluate, std::strlen(kEvaluate)) == 0;
}

// a top-level op of the program: outside every op and backward node on this thread
bool top_level(const at::RecordFunction& fn, const std::vector<Frame>& fr) {
  return fr.empty() && fn.scope() == at::RecordScope::FUNCTION && !is_evaluate(fn);
}

void record_facts(Recorder& r, std::vector<Seen>& seen, int64_t serial) {
  int64_t t = now_ns();
  for (auto& s : seen) {
    int64_t sid = claim_locked(r, s.t, -1, false);
    if (sid == 0) {   // not an allocation of the capture: Python's storages know it
      std::pair<int64_t, int64_t> key{(int64_t)(intptr_t)s.t.unsafeGetTensorImpl(), s.seq};
      auto it = r.foreign.find(key);
      if (it != r.foreign.end() && !it->second.expired()) continue;
      WeakImpl w(s.t.getIntrusivePtr());
      r.foreign.insert_or_assign(key, w);
      r.foreign_new.push_back(w);
      continue;
    }
    if (!r.fact_seen.insert({sid, s.seq}).second) continue;
    r.ref(serial);
    r.facts.push_back({t, serial, sid, s.seq, s.output_nr, std::move(s.node)});
    if (s.seq >= 0) r.outputs.emplace_back(s.t.getIntrusivePtr());
  }
}

// -- the user's line behind an op (the Python engine's SourceWatcher, capture/modules.py) ------
// The GIL held: is this code object the user's (outside torch and gradmem)?
bool user_code(Sources& s, PyCodeObject* code) {
  PyObject* key = reinterpret_cast<PyObject*>(code);
  auto it = s.user.find(key);
  if (it != s.user.end()) return it->second;
  py::object held = py::reinterpret_borrow<py::object>(key);
  std::string file = py::str(held.attr("co_filename"));
  bool mine = true;
  for (const auto& dir : s.skip)
    if (file.rfind(dir, 0) == 0) mine = false;
  s.held.push_back(std::move(held));
  return s.user[key] = mine;
}

int32_t place_of(Sources& s, PyCodeObject* code, int line) {
  std::pair<int64_t, int64_t> key{(int64_t)(intptr_t)code, line};
  auto it = s.ids.find(key);
  if (it != s.ids.end()) return it->second;
  py::handle c(reinterpret_cast<PyObject*>(code));
  s.places.push_back(py::make_tuple(c.attr("co_filename"), line, c.attr("co_name")));
  return s.ids[key] = (int32_t)s.places.size() - 1;
}

// The GIL held: the innermost frame of the user's, as the Python engine's frame walk finds it
int32_t user_place(Sources& s) {
  PyFrameObject* f = PyEval_GetFrame();   // borrowed
  Py_XINCREF(f);
  int32_t place = -1;
  while (f != nullptr) {
    PyCodeObject* code = PyFrame_GetCode(f);   // a new reference, as is PyFrame_GetBack's
    bool mine = user_code(s, code);
    if (mine) place = place_of(s, code, PyFrame_GetLineNumber(f));
    Py_DECREF(code);
    PyFrameObject* back = mine ? nullptr : PyFrame_GetBack(f);
    Py_DECREF(f);
    f = back;
  }
  return place;
}

// Can this thread take the GIL? Not before Python starts, nor on a thread Python never ran
// on (a C++ thread of torch's: it has no Python frames and no program of ours to call)
bool python_thread() {
  return Py_IsInitialized() && PyGILState_GetThisThreadState() != nullptr;
}

// A top-level op began step `serial` (or an op of a forward run again inside a node): record
// the user's line behind it when it changed. Called outside the recorder's lock, as it takes
// the GIL (the op's Python binding released it); a thread Python never ran on has no line.
void note_source(Recorder& r, int64_t serial) {
  if (!python_thread()) return;
  int64_t t = now_ns();
  int32_t place;
  {
    py::gil_scoped_acquire gil;
    place = user_place(r.src);
  }
  std::lock_guard<std::recursive_mutex> g(r.mu);
  if (g_rec != &r || place == r.source_last) return;
  r.source_last = place;
  r.ref(serial);
  r.sources.push_back({t, serial, place});
}

Alloc* live_at(Recorder& r, void* ptr);

// The lock held: a top-level op's input that needs no grad (those that do have facts) on a
// storage the allocator never showed during the capture, met for the first time
void note_foreign_input(Recorder& r, const at::Tensor& t, std::vector<at::Tensor>& out) {
  if (!t.defined() || t.requires_grad() || !t.has_storage()) return;
  const c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
  auto it = r.foreign_inputs.find(impl);
  if (it != r.foreign_inputs.end() && !it->second.expired()) return;
  if (impl->data() == nullptr || live_at(r, const_cast<void*>(impl->data())) != nullptr) return;
  r.foreign_inputs.insert_or_assign(impl, c10::weak_intrusive_ptr<c10::StorageImpl>(t.storage().getWeakStorageImpl()));
  out.push_back(t);
}

void note_foreign_inputs(Recorder& r, c10::ArrayRef<c10::IValue> values, std::vector<at::Tensor>& out) {
  for (const auto& v : values) {
    if (v.isTensor()) {
      note_foreign_input(r, v.toTensor(), out);
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) note_foreign_input(r, t, out);
    }
  }
}

// Outside the lock: Python's `see` tracks each (its storage id, its value, a weak reference
// that sees it freed), as the Python engine's op does with its inputs. gradmem's own work:
// what `see` runs (a small tensor's value) is not recorded.
void hand_over_inputs(Recorder& r, std::vector<at::Tensor>& inputs) {
  if (!python_thread() || !r.see) return;
  Busy busy;
  py::gil_scoped_acquire gil;
  for (const auto& t : inputs) {
    try {
      r.see(py::reinterpret_steal<py::object>(THPVariable_Wrap(t)));
    } catch (py::error_already_set& e) {   // `see` is guarded in Python: this is a bug of ours
      e.discard_as_unraisable("gradmem's native recorder, handing an input over");
    }
  }
  inputs.clear();
}

// -- op frames ---------------------------------------------------------------------------------
void recompute_saved();   // saved-tensor hooks, below

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  if (t_busy || !ours()) return nullptr;
  Recorder& r = *g_rec;
  std::vector<Seen> seen;
  std::vector<Frame>& fr = frames();
  bool top = top_level(fn, fr);
  if (top && r.want_inputs) gather_values(fn.inputs(), seen);
  std::vector<at::Tensor> foreign;   // inputs from before the capture, met here first
  std::unique_lock<std::recursive_mutex> g(r.mu);
  if (top && r.want_inputs) note_foreign_inputs(r, fn.inputs(), foreign);
  int32_t op = r.intern(fn);
  const OpInfo& info = r.ops[op];
  const Frame* parent = fr.empty() ? nullptr : &fr.back();
  Frame f{{}, 0, -1, -1, false, false};
  bool source = false;   // read the user's line (outside the lock)
  bool modes_off = top && c10::impl::tls_is_dispatch_key_excluded(c10::DispatchKey::Python);
  bool tensor_call = top && t_tensor_call >= 0 &&
                     ((info.shortn == "to" && modes_off) || info.shortn == "lift_fresh" || info.shortn == "detach_");
  if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION) {
    f.boundary = true;
    if (parent != nullptr && parent->boundary && parent->serial >= 0 && r.steps[parent->serial].seq_nr == -2) {
      f.serial = parent->serial;   // the node inside its evaluate_function frame: same step
      r.steps[f.serial].op = op;
      r.steps[f.serial].seq_nr = fn.seqNr();
    } else {
      f.serial = r.new_step(op, 1, fn.seqNr());
    }
  } else if (info.evaluate) {
    f.boundary = true;
    f.serial = r.new_step(op, 1, -2);   // -2: the node's name and number come from its frame
    f.node = torch::autograd::get_current_node();
    if (f.node) f.hook = f.node->add_post_hook(std::make_unique<EndHook>(f.serial, f.node.get()));
  } else if (parent != nullptr && parent->op >= 0) {
    f.op = parent->op;               // inside an op: its allocations are the outer op's
    f.serial = parent->serial;
    f.recompute = parent->recompute;
  } else if (!info.composite) {
    f.op = op;                       // the outermost non-composite op below any node boundary
    f.attributed = true;
    f.serial = parent != nullptr ? parent->serial : -1;   // inside a node: the node's step
    if (tensor_call) f.serial = t_tensor_call;
    if (f.serial < 0) {
      f.serial = r.new_step(op, 0, -1);
      source = !r.src.skip.empty();
    }
    // a forward op inside a backward node with grad mode on, as checkpoint runs its block
    // again (ops.py: the Python engine's test, word for word)
    f.recompute = parent != nullptr && at::GradMode::is_enabled() && !r.create_graph && node_serial_locked() >= 0;
    source = source || (f.recompute && !r.src.skip.empty());
  } else {
    f.serial = tensor_call ? t_tensor_call : parent != nullptr ? parent->serial : -1;
  }
  if (tensor_call && info.shortn == "lift_fresh") r.steps[t_tensor_call].op = op;
  if (!seen.empty()) record_facts(r, seen, f.serial >= 0 ? f.serial : r.last_serial);
  if (top) {
    f.seq_lo = (int64_t)at::sequence_number::peek();
    bool begins = modes_off && info.uninitialized && info.factory && f.serial >= 0;
    t_tensor_call = begins ? f.serial : tensor_call && info.shortn != "detach_" ? t_tensor_call : -1;
  }
  f.own = op;
  bool recompute = f.recompute;
  int64_t serial = f.serial;
  f.fn = &fn;
  fr.push_back(f);
  if (recompute || source || !foreign.empty()) g.unlock();   // outside the lock: these take the GIL
  if (!foreign.empty()) hand_over_inputs(r, foreign);
  if (source) note_source(r, serial);
  if (recompute) recompute_saved();
  return nullptr;   // no context to allocate: on_exit knows its frame by the RecordFunction's address
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  std::vector<Frame>& fr = frames();
  if (fr.empty() || fr.back().fn != &fn || g_rec == nullptr) return;   // on_enter left this op alone
  Frame f = std::move(fr.back());   // destroyed after the lock is released: dropping
  fr.pop_back();                    // a node may free memory, which reports here
  Recorder& r = *g_rec;
  std::vector<Seen> seen;
  if (top_level(fn, fr)) gather_values(fn.outputs(), seen);
  int64_t seq_hi = f.seq_lo >= 0 ? (int64_t)at::sequence_number::peek() : -1;
  std::lock_guard<std::recursive_mutex> g(r.mu);
  if (seq_hi > f.seq_lo) {
    int64_t serial = f.serial >= 0 ? f.serial : r.last_serial;
    r.ref(serial);
    r.op_nodes.push_back({now_ns(), serial, f.seq_lo, seq_hi});
  }
  int32_t own = f.own;
  if (f.attributed) {
    bool value = !r.ops[f.op].uninitialized;
    for (const auto& out : fn.outputs()) {
      if (out.isTensor()) {
        claim_locked(r, out.toTensor(), f.op, value);
      } else if (out.isTensorList()) {
        for (const auto& t : out.toTensorList()) claim_locked(r, t, f.op, value);
      }
    }
  } else if (fn.scope() == at::RecordScope::FUNCTION && r.ops[own].shortn.rfind("lift", 0) == 0) {
    // torch.tensor(data) reaches the allocator as `empty`: the lift op names it
    for (const auto& out : fn.outputs())
      if (out.isTensor()) claim_locked(r, out.toTensor(), own, true);
  }
  if (!seen.empty()) record_facts(r, seen, f.serial >= 0 ? f.serial : r.last_serial);
  if (f.node && f.hook) f.node->del_post_hook(f.hook);
}

// -- values ------------------------------------------------------------------------------------
// values.py's _number: ".6g" for a preview a reader scans, ".9g" (exact) gives a float32 back
std::string number(double v, bool integral, bool boolean, bool exact) {
  if (boolean) return v != 0 ? "True" : "False";
  char buf[64];
  if (integral) {
    std::snprintf(buf, sizeof buf, "%lld", (long long)v);
  } else if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%lld", (long long)v);
  } else {
    std::snprintf(buf, sizeof buf, exact ? "%.9g" : "%.6g", v);
  }
  return buf;
}

std::string nested(const at::Tensor& t, int dim, int64_t offset, bool integral, bool boolean, bool exact,
                   const std::vector<double>& flat) {
  if (dim == t.dim()) return number(flat[offset], integral, boolean, exact);
  std::string s = "[";
  int64_t stride = 1;
  for (int d = dim + 1; d < t.dim(); ++d) stride *= t.size(d);
  for (int64_t i = 0; i < t.size(dim); ++i) {
    if (i) s += ", ";
    s += nested(t, dim + 1, offset + i * stride, integral, boolean, exact, flat);
  }
  return s + "]";
}

std::string preview(const at::Tensor& t, bool exact) {
  if (t.device().type() != c10::DeviceType::CPU || t.is_complex() || t.numel() > kMaxPreview) return "";
  Busy busy;   // its allocations are gradmem's, and the recorder's lock is held
  try {
    at::NoGradGuard no_grad;
    at::RecordFunctionGuard off(false);   // reading is not the program's op
    auto flat_t = t.contiguous().to(at::kDouble).reshape({-1});
    std::vector<double> flat(flat_t.data_ptr<double>(), flat_t.data_ptr<double>() + flat_t.numel());
    bool boolean = t.scalar_type() == at::kBool;
    bool integral = !boolean && c10::isIntegralType(t.scalar_type(), false);
    return nested(t, 0, 0, integral, boolean, exact, flat);
  } catch (...) {
    return "";
  }
}

// torch's Python name for a dtype ("float32" for Float), as the Python path records it
std::string dtype_name(c10::ScalarType st) {
  switch (st) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: {
      std::string s = c10::toString(st);
      for (auto& c : s) c = (char)std::tolower(c);
      return s;
    }
  }
}

// the allocation live at ptr (nullptr: the capture saw none there)
Alloc* live_at(Recorder& r, void* ptr) {
  auto it = r.live.find(ptr);
  return it == r.live.end() ? nullptr : &r.allocs[it->second];
}

// an allocation claimed for the first time: its storage id, and the op it is named after
void first_claim(Recorder& r, Alloc& a, int32_t op) {
  a.claimed = true;
  a.sid = r.next_sid->fetch_add(1);
  a.claim_op = op;
}

// an op output (or a tensor Python saw) on an allocation made during the capture
int64_t claim_locked(Recorder& r, const at::Tensor& t, int32_t op, bool value) {
  if (!t.defined() || !t.has_storage()) return 0;
  Alloc* found = live_at(r, t.storage().data_ptr().get());
  if (found == nullptr) return 0;
  Alloc& a = *found;
  if (!a.claimed) {
    first_claim(r, a, op >= 0 ? op : a.op);
    a.dtype = dtype_name(t.scalar_type());
    a.shape = t.sizes().vec();
    a.factory = a.claim_op >= 0 && r.ops[a.claim_op].factory;
    a.grad_args = t.requires_grad();
    if (value) a.value = preview(t);
  } else if (a.by_python && op >= 0 && op == a.claim_op) {
    // autograd saved the output inside its op (exp's result): the op's own output
    // describes it, with its value, as the Python engine records it at the op's return
    a.by_python = false;
    a.dtype = dtype_name(t.scalar_type());
    a.shape = t.sizes().vec();
    a.factory = r.ops[op].factory;
    a.grad_args = t.requires_grad();
    if (value) a.value = preview(t);
  } else if (op >= 0 && r.ops[op].shortn.rfind("lift", 0) == 0 && a.claim_op >= 0 &&
             r.ops[a.claim_op].uninitialized) {
    a.claim_op = op;   // torch.tensor(data): made by `empty`, named by lift_fresh
    a.factory = true;
    Step& made = r.steps[a.serial];   // and its step too, as the Python engine sees only lift_fresh
    if (made.kind == 0 && made.op >= 0 && r.ops[made.op].uninitialized) made.op = op;
    if (value) a.value = preview(t);
  }
  return a.sid;
}

// -- memory reporting --------------------------------------------------------------------------
struct State : public ProfilerStateBase {
  State() : ProfilerStateBase(ProfilerConfig(ProfilerState::Disabled, false, true)) {}
  ActiveProfilerType profilerType() override { return ActiveProfilerType::NONE; }
  bool memoryProfilingEnabled() const override { return true; }

  void reportMemoryUsage(void* ptr, int64_t size, size_t total, size_t, c10::Device device) override {
    if (g_rec == nullptr || size == 0 || t_busy) return;
    Recorder& r = *g_rec;
    int64_t t = now_ns();
    std::lock_guard<std::recursive_mutex> g(r.mu);
    const std::vector<Frame>& fr = frames();
    const Frame* f = fr.empty() ? nullptr : &fr.back();
    int64_t serial = current_serial_locked(r);
    r.allocator.push_back({t, size, (int64_t)total, serial, ptr, (int8_t)device.type()});
    if (size > 0) {
      Alloc a;
      a.t = t; a.serial = serial; a.nbytes = size; a.ptr = ptr;
      a.op = f != nullptr ? f->op : -1;
      a.recompute = f != nullptr && f->recompute;
      a.device_type = (int8_t)device.type(); a.device_index = device.index();
      r.live[ptr] = r.allocs.size();
      r.allocs.push_back(std::move(a));
    } else {
      auto it = r.live.find(ptr);
      if (it == r.live.end()) return;   // made before the capture
      Alloc& a = r.allocs[it->second];
      a.t_free = t; a.serial_free = r.last_serial;
      r.ref(r.last_serial);
      r.live.erase(it);
    }
  }
};

// a storage a Python-side hook saw (a pack) before its op returned, on an allocation of
// the capture: its id, claimed now if nothing claimed it yet; 0 when the capture never saw it
void first_claim_by_hook(Recorder& r, Alloc& a, std::string dtype, std::vector<int64_t> shape, bool requires_grad) {
  first_claim(r, a, a.op);
  a.by_python = true;
  a.dtype = std::move(dtype);
  a.shape = std::move(shape);
  a.grad_args = requires_grad;
}

int64_t claim_by_hook_locked(Recorder& r, void* ptr, const std::string& dtype, const std::vector<int64_t>& shape,
                             bool requires_grad) {
  Alloc* a = live_at(r, ptr);
  if (a == nullptr) return 0;
  if (!a->claimed) first_claim_by_hook(r, *a, dtype, shape, requires_grad);
  return a->sid;
}

// claim_by_hook_locked for a tensor: its facts are only read when the storage is unclaimed
int64_t claim_tensor_by_hook_locked(Recorder& r, const at::Tensor& t) {
  if (!t.has_storage()) return 0;
  Alloc* a = live_at(r, t.storage().data_ptr().get());
  if (a == nullptr) return 0;
  if (!a->claimed) first_claim_by_hook(r, *a, dtype_name(t.scalar_type()), t.sizes().vec(), t.requires_grad());
  return a->sid;
}

// gradmem's storage id of a tensor's storage when the capture saw its allocation, else 0
// (Python passes the storage's address, dtype and shape: no tensor crosses the boundary)
int64_t claim(uintptr_t ptr, const std::string& dtype, const std::vector<int64_t>& shape, bool requires_grad) {
  if (g_rec == nullptr || ptr == 0) return 0;
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  return claim_by_hook_locked(*g_rec, (void*)ptr, dtype, shape, requires_grad);
}

constexpr int64_t kNoStorage = INT64_MIN;   // a storage without an id (Python's None)

// storages the capture never saw allocated (made before it, or shared), whose ids Python's
// Storages keep: each asked of Python once, and answered here again while the same storage
// lives at the same address with the same size (a resize, as FSDP2 does, asks again)
struct ForeignId {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const void* ptr;
  size_t nbytes;
  int64_t sid;
};
std::unordered_map<const c10::StorageImpl*, ForeignId> g_foreign_ids;   // emptied at stop

int64_t foreign_id(const at::Tensor& t, py::handle obj, py::handle see) {
  const c10::StorageImpl* impl = t.has_storage() ? t.storage().unsafeGetStorageImpl() : nullptr;
  if (impl != nullptr) {
    auto it = g_foreign_ids.find(impl);
    if (it != g_foreign_ids.end() && !it->second.storage.expired() && it->second.ptr == impl->data() &&
        it->second.nbytes == impl->nbytes())
      return it->second.sid;
  }
  py::object got = see(obj);
  int64_t sid = got.is_none() ? kNoStorage : got.cast<int64_t>();
  if (impl != nullptr && sid != kNoStorage)
    g_foreign_ids.insert_or_assign(impl, ForeignId{t.storage().getWeakStorageImpl(), impl->data(), impl->nbytes(), sid});
  return sid;
}

// -- saved-tensor hooks ------------------------------------------------------------------------
// The pack and unpack hooks themselves, so that nothing runs in Python per saved tensor in
// the usual case: what gradmem/capture/saved.py records, recorded here. Python is called
// back only for what it owns: the id of a storage made before the capture (Storages'
// weakrefs), the exact digits of a small tensor (values.exact_now), and the Python
// watcher's own pack and unpack when anything here fails or is not ours to handle.
struct SavedHooks {
  py::object see, exact, pack, unpack;   // Python: Storages.see, exact_now, the Python pair
  py::object checkpoint_file;            // torch/utils/checkpoint.py, as frames spell it
  int64_t generation = 0;                // which capture made a Packed (a later one ignores it)
  py::object ours_pack, ours_unpack;     // this file's pack_saved and unpack_saved, as installed
  bool paused = false;                   // taken off the stack for a backward call (pause_saved)
  PyObject* below = nullptr;             // then: the pack hook left on top (nullptr: none)
};

SavedHooks* g_saved = nullptr;
int64_t g_generation = 0;

// what a saved slot holds: an alias (never the tensor itself: a saved output would hold its
// own grad_fn, a cycle gc cannot break) and the version it was saved at. A plain CPython
// type, not a pybind class: pybind registers every instance in a global map, a cost per
// saved tensor; this one is made with PyObject_New and records its release when freed.
struct PackedObject {
  PyObject_HEAD
  int64_t pid, version, generation;
  at::Tensor alias;   // constructed in place (pack_saved), destroyed in packed_dealloc
};

void packed_dealloc(PyObject* self) {
  auto* p = reinterpret_cast<PackedObject*>(self);
  if (g_rec != nullptr && g_saved != nullptr && p->generation == g_saved->generation) {
    Recorder& r = *g_rec;
    std::lock_guard<std::recursive_mutex> g(r.mu);
    r.releases.push_back({now_ns(), current_serial_locked(r), p->pid, -1});
  }
  p->alias.~Tensor();
  PyObject_Free(self);
}

PyObject* packed_pid(PyObject* self, void*) { return PyLong_FromLongLong(reinterpret_cast<PackedObject*>(self)->pid); }

PyGetSetDef packed_getset[] = {{"pid", packed_pid, nullptr, "the pack's id", nullptr}, {}};

PyTypeObject PackedType = {PyVarObject_HEAD_INIT(nullptr, 0)};

bool is_packed(PyObject* obj) { return Py_TYPE(obj) == &PackedType; }

void add_packed_type(py::module_& m) {
  PackedType.tp_name = "gradmem_native.Packed";
  PackedType.tp_basicsize = sizeof(PackedObject);
  PackedType.tp_dealloc = packed_dealloc;
  PackedType.tp_flags = Py_TPFLAGS_DEFAULT;
  PackedType.tp_doc = "a saved slot's content under gradmem's native saved-tensor hooks";
  PackedType.tp_getset = packed_getset;
  if (PyType_Ready(&PackedType) < 0) throw py::error_already_set();
  m.add_object("Packed", py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(&PackedType)));
}

// non-reentrant checkpoint keeps its block's inputs by packing them itself: the Python
// frame that called into autograd is checkpoint's own (two frames up, at most)
bool packed_by_checkpoint(PyObject* file) {
  PyFrameObject* f = PyEval_GetFrame();
  Py_XINCREF(f);
  bool hit = false;
  for (int i = 0; i < 2 && f != nullptr && !hit; ++i) {
    PyCodeObject* code = PyFrame_GetCode(f);
    hit = PyUnicode_Compare(code->co_filename, file) == 0;
    Py_DECREF(code);
    PyFrameObject* back = PyFrame_GetBack(f);
    Py_DECREF(f);
    f = back;
  }
  Py_XDECREF(f);
  if (PyErr_Occurred()) PyErr_Clear();
  return hit;
}

// torch's Python tensor object as torch 2.13's python_variable.h lays it out (THPVariable:
// the tensor right after the object's header). Older torch holds a MaybeOwned there, so the
// layout is checked once against `_cdata` (check_tensor_layout) before it is relied on.
struct TensorObject {
  PyObject_HEAD
  at::Tensor cdata;
};
bool g_tensor_layout = false;

at::Tensor tensor_via_cdata(py::handle obj) {
  py::object cdata = obj.attr("_cdata");
  auto impl = c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>::unsafe_reclaim_from_nonowning(
      reinterpret_cast<c10::TensorImpl*>(cdata.cast<intptr_t>()));
  return at::Tensor(std::move(impl));
}

void check_tensor_layout() {
  py::object probe = py::reinterpret_steal<py::object>(THPVariable_Wrap(at::empty({1})));
  void* first = *reinterpret_cast<void* const*>(reinterpret_cast<const char*>(probe.ptr()) + sizeof(PyObject));
  g_tensor_layout = reinterpret_cast<intptr_t>(first) == probe.attr("_cdata").cast<intptr_t>();
}

at::Tensor tensor_of(py::handle obj) {
  if (g_tensor_layout && PyObject_TypeCheck(obj.ptr(), reinterpret_cast<PyTypeObject*>(THPVariableClass)))
    return reinterpret_cast<TensorObject*>(obj.ptr())->cdata;
  return tensor_via_cdata(obj);
}

py::object pack_saved(py::handle obj) {
  SavedHooks* h = g_saved;
  if (g_rec == nullptr || h == nullptr) throw std::runtime_error("gradmem's native recorder is not running");
  PackRec p;
  at::Tensor alias;
  int64_t version;
  try {
    at::Tensor t = tensor_of(obj);
    p.shape = t.sizes().vec();
    p.has_stride = t.layout() == c10::kStrided;
    if (p.has_stride) p.stride = t.strides().vec();
    p.dtype = t.scalar_type();
    p.numel = t.numel();
    p.element_size = (int64_t)t.element_size();
    p.checkpoint = packed_by_checkpoint(h->checkpoint_file.ptr());
    if (p.numel <= kMaxPreview) {
      at::RecordFunctionGuard off(false);   // exact_now's ops are not the program's
      py::object v = h->exact(obj);
      if (!v.is_none()) p.value = v.cast<std::string>();
    }
    version = (int64_t)t._version();
    alias = t.tensor_data();   // same storage and version counter, no history; no op runs
    Recorder& r = *g_rec;
    {
      std::lock_guard<std::recursive_mutex> g(r.mu);
      p.sid = claim_tensor_by_hook_locked(r, t);
    }
    if (p.sid == 0) {   // made before the capture, or shared: Python's storages know it
      int64_t sid = foreign_id(t, obj, h->see);
      p.sid = sid == kNoStorage ? 0 : sid;
    }
  } catch (const py::error_already_set&) {
    throw;   // the Python callbacks guard themselves: this is not an ordinary failure
  } catch (const std::exception&) {
    return h->pack(obj);   // a tensor this cannot describe: the Python watcher records it
  }
  PackedObject* packed = PyObject_New(PackedObject, &PackedType);
  if (packed == nullptr) throw py::error_already_set();
  new (&packed->alias) at::Tensor(std::move(alias));
  packed->version = version;
  packed->generation = h->generation;
  Recorder& r = *g_rec;
  {
    std::lock_guard<std::recursive_mutex> g(r.mu);
    p.pid = r.next_pid++;
    p.t = now_ns();
    p.serial = current_serial_locked(r);
    packed->pid = p.pid;
    r.packs.push_back(std::move(p));
  }
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(packed));
}

std::string modified_message(const at::Tensor& t, int64_t saved_version) {
  std::string shape = "[";
  for (size_t i = 0; i < t.sizes().size(); ++i) shape += (i ? ", " : "") + std::to_string(t.sizes()[i]);
  shape += "]";
  return "one of the variables needed for gradient computation has been modified by an inplace "
         "operation: [torch." + dtype_name(t.scalar_type()) + " " + shape + "] is at version " +
         std::to_string(t._version()) + "; expected version " + std::to_string(saved_version) +
         " instead. (Checked by gradmem, whose saved-tensor hooks turn off autograd's own check.)";
}

py::object unpack_saved(py::handle obj) {
  if (!is_packed(obj.ptr())) {
    if (g_saved == nullptr) throw std::runtime_error("gradmem's saved-tensor hooks outlived their capture");
    return g_saved->unpack(obj);   // the Python watcher packed it
  }
  PackedObject& p = *reinterpret_cast<PackedObject*>(obj.ptr());
  if (g_rec != nullptr && g_saved != nullptr && p.generation == g_saved->generation) {
    Recorder& r = *g_rec;
    std::lock_guard<std::recursive_mutex> g(r.mu);
    r.unpacks.push_back({now_ns(), current_serial_locked(r), p.pid, node_serial_locked()});
  }
  if ((int64_t)p.alias._version() != p.version) throw std::runtime_error(modified_message(p.alias, p.version));
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(p.alias));
}

void hook_saved(py::object see, py::object exact, py::object pack, py::object unpack, py::object checkpoint_file,
                py::object ours_pack, py::object ours_unpack) {
  TORCH_CHECK(g_rec != nullptr, "gradmem's native recorder is not running");
  delete g_saved;
  g_saved = new SavedHooks{std::move(see), std::move(exact), std::move(pack), std::move(unpack),
                           std::move(checkpoint_file), ++g_generation, std::move(ours_pack), std::move(ours_unpack)};
}

// Our saved-tensor hooks come off torch's stack of default hooks for a backward call that
// builds no graph. While any Python hooks are on that stack, autograd copies it, with a
// GIL-taking reference count per hook, every time it sets a node's thread-local state: a
// tenth of an MLP step. Nothing is saved in such a call, except by a forward run again
// inside a node (a reentrant checkpoint's recompute): on_enter puts our hooks back for it
// (recompute_saved), and the node's end restores the engine's state without them.
PyObject* top_pack_hook() {
  const auto& stack = at::SavedTensorDefaultHooks::get_tls_state().stack;
  return stack.empty() ? nullptr : stack.top().first.ptr(getPyInterpreter());
}

void push_ours() {
  at::SavedTensorDefaultHooks::push_hooks(c10::SafePyObject(g_saved->ours_pack.inc_ref().ptr(), getPyInterpreter()),
                                          c10::SafePyObject(g_saved->ours_unpack.inc_ref().ptr(), getPyInterpreter()));
}

bool pause_saved() {
  if (g_saved == nullptr || g_saved->paused || top_pack_hook() != g_saved->ours_pack.ptr()) return false;
  at::SavedTensorDefaultHooks::pop_hooks();
  g_saved->paused = true;
  g_saved->below = top_pack_hook();
  return true;
}

void resume_saved() {
  if (g_saved == nullptr || !g_saved->paused) return;
  g_saved->paused = false;
  push_ours();
}

// a forward op run again inside a backward node while our hooks are paused: back on, unless
// someone else's hooks are on top (checkpoint's own recomputation hooks: theirs to record)
void recompute_saved() {
  if (g_saved == nullptr || !g_saved->paused || top_pack_hook() != g_saved->below) return;
  try {
    py::gil_scoped_acquire gil;
    push_ours();
  } catch (...) {
  }
}

int64_t new_pid() {
  TORCH_CHECK(g_rec != nullptr, "gradmem's native recorder is not running");
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  return g_rec->next_pid++;
}

// -- the backward graph ------------------------------------------------------------------------
// What gradmem/capture/graph.py's walk records of each node not seen yet, walked here: its id,
// its key (name and sequence number; for AccumulateGrad, the storage of its leaf), the nodes
// it passes gradients to, its non-tensor saved values and the pack id in each saved slot.
// The ids stay here (node_id answers Python); the record is exported with the rest, and
// engine.py's merge makes graph.py's events from it. The walk order, and so the ids, are
// those of the Python walk.
using NodePtr = c10::intrusive_ptr<torch::autograd::Node>;
const char* kAccumulate = "torch::autograd::AccumulateGrad";

struct StrPairHash {
  size_t operator()(const std::pair<std::string, int64_t>& p) const {
    return std::hash<std::string>()(p.first) * 1000003u ^ std::hash<int64_t>()(p.second);
  }
};

struct NodeFields {   // per node type: its saved tensor slots and saved values, as attribute names
  std::vector<std::pair<py::object, std::string>> slots;   // (attribute, field name)
  std::vector<std::pair<py::object, py::object>> attrs;    // (attribute, field name as a str)
};

// a node the walk met first: what graph.py's NODE event holds (attrs: (field, value) pairs)
struct NodeRec {
  int64_t t, serial, nid;
  std::string name;
  int64_t part;   // its key's number: the sequence number, or a leaf's storage id
  std::vector<std::pair<int64_t, int64_t>> next;   // (child id, -1 for none; input number)
  py::object attrs;   // released with the GIL held (at stop)
};

struct SlotRec {   // a saved slot holding our pack
  int64_t t, serial, pack, nid;
  std::string field;
};

struct GraphState {
  std::vector<NodeRec> nodes;
  std::vector<SlotRec> slots;
  std::unordered_map<std::pair<std::string, int64_t>, int64_t, StrPairHash> ids;
  std::unordered_map<PyTypeObject*, NodeFields> fields;
  // by C++ node class: a generated node's Python type is one per class, so its fields are
  // known without making its Python object (AccumulateGrad and TBackward0 have none)
  std::unordered_map<std::type_index, const NodeFields*> by_class;
  int64_t next_nid = 1;
};

// custom autograd.Function nodes share one C++ class, each with its own Python type
bool python_node(const torch::autograd::Node& node) {
  return std::strcmp(typeid(node).name(), "N5torch8autograd6PyNodeE") == 0;
}

GraphState* g_graph = nullptr;   // lives with the session

py::object py_int64(int64_t v) { return v == kNoStorage ? py::object(py::none()) : py::object(py::int_(v)); }

// the id of a tensor's storage: the capture's own allocation (claimed as a hook's), else
// Python's storages (made before the capture)
int64_t storage_id(const at::Tensor& t, py::handle see) {
  int64_t sid;
  {
    std::lock_guard<std::recursive_mutex> g(g_rec->mu);
    sid = claim_tensor_by_hook_locked(*g_rec, t);
  }
  if (sid != 0) return sid;
  return foreign_id(t, py::reinterpret_steal<py::object>(THPVariable_Wrap(t)), see);
}

// a module path's index: Python hands the same str object for a module at every call
// (modules.py keeps one per module), so the object, held here, is the key
int32_t module_path_locked(Recorder& r, py::handle path) {
  auto it = r.module_index.find(path.ptr());
  if (it != r.module_index.end()) return it->second;
  int32_t i = (int32_t)r.module_paths.size();
  r.module_paths.push_back(path.cast<std::string>());
  r.module_path_objects.push_back(py::reinterpret_borrow<py::object>(path));
  r.module_index.emplace(path.ptr(), i);
  return i;
}

// a module call begins (modules.py: module_enter)
void module_enter(py::handle path) {
  if (g_rec == nullptr) return;
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  g_rec->modules.push_back({now_ns(), current_serial_locked(*g_rec), module_path_locked(*g_rec, path), false, {}});
}

void output_storage(py::handle obj, py::handle see, std::vector<int64_t>& out) {
  if (!PyObject_TypeCheck(obj.ptr(), (PyTypeObject*)THPVariableClass)) return;
  int64_t sid = storage_id(tensor_of(obj), see);
  if (sid != kNoStorage) out.push_back(sid);
}

// a module call ends, with the storages of its tensor outputs (module_exit): ``output`` is
// what forward returned, a tensor or a tuple or list whose tensors count
void module_exit(py::object see, py::handle path, py::handle output) {
  if (g_rec == nullptr) return;
  std::vector<int64_t> outputs;
  if (PyTuple_Check(output.ptr()) || PyList_Check(output.ptr())) {
    for (auto obj : output) output_storage(obj, see, outputs);
  } else {
    output_storage(output, see, outputs);
  }
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  g_rec->modules.push_back({now_ns(), current_serial_locked(*g_rec), module_path_locked(*g_rec, path), true,
                            std::move(outputs)});
}

// -- names of parameters' gradients -----------------------------------------------------------
// names.py walks a module's parameters once (watch_params), and after each backward call
// asks here to name their new .grads (name_grads): no Python run per parameter. What this
// cannot answer for (a parameter gone or given new storage, a .grad the capture never saw
// allocated) is handed back by index, for Python to name as it names everything else.
int64_t watch_params(py::list names, py::list params) {
  TORCH_CHECK(g_rec != nullptr, "gradmem's native recorder is not running");
  Recorder& r = *g_rec;
  std::vector<NamedParam> group;
  std::vector<at::Tensor> held;   // released after the lock, as in name_grads
  std::lock_guard<std::recursive_mutex> g(r.mu);
  for (size_t i = 0; i < py::len(params); ++i) {
    held.push_back(tensor_of(params[i]));
    const at::Tensor& p = held.back();
    int32_t name = (int32_t)r.param_names.size();
    group.push_back({name, WeakImpl(p.getIntrusivePtr()), p.has_storage() ? p.storage().unsafeGetStorageImpl() : nullptr});
    r.param_names.push_back(names[i].cast<std::string>());
    const at::Tensor& grad = p.grad();   // named by the walk that just ran: not again
    int64_t sid = grad.defined() ? claim_tensor_by_hook_locked(r, grad) : 0;
    if (sid != 0) r.grad_named.insert({sid, name});
  }
  r.param_groups.push_back(std::move(group));
  return (int64_t)r.param_groups.size() - 1;
}

py::list name_grads(int64_t group) {
  py::list theirs;
  if (g_rec == nullptr) return theirs;
  std::vector<at::Tensor> held;   // released after the lock: dropping a tensor may free memory
  std::vector<int64_t> indices;
  {
    Recorder& r = *g_rec;
    std::lock_guard<std::recursive_mutex> g(r.mu);
    const auto& params = r.param_groups.at((size_t)group);
    for (size_t i = 0; i < params.size(); ++i) {
      const NamedParam& np = params[i];
      auto strong = np.param.lock();
      if (!strong) {
        indices.push_back((int64_t)i);
        continue;
      }
      held.emplace_back(std::move(strong));
      const at::Tensor& p = held.back();
      if ((p.has_storage() ? p.storage().unsafeGetStorageImpl() : nullptr) != np.storage) {
        indices.push_back((int64_t)i);
        continue;
      }
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      int64_t sid = claim_tensor_by_hook_locked(r, grad);
      if (sid == 0) {
        indices.push_back((int64_t)i);
      } else if (r.grad_named.insert({sid, np.name}).second) {
        r.grad_names.push_back({now_ns(), current_serial_locked(r), sid, np.name, grad.sizes().vec()});
      }
    }
  }
  for (int64_t i : indices) theirs.append(i);
  return theirs;
}

struct Walk {
  py::handle see;
  std::unordered_map<const torch::autograd::Node*, std::pair<std::string, int64_t>> keys;

  const std::pair<std::string, int64_t>& key(const NodePtr& node) {
    auto it = keys.find(node.get());
    if (it != keys.end()) return it->second;
    // AccumulateGrad's name() demangles its type name at every call: told by its type here
    bool accumulate = typeid(*node) == typeid(torch::autograd::AccumulateGrad);
    std::string name = accumulate ? std::string(kAccumulate) : node->name();
    int64_t part;
    if (accumulate) {
      part = storage_id(static_cast<torch::autograd::AccumulateGrad*>(node.get())->variable, see);
    } else {
      part = (int64_t)node->sequence_nr();
    }
    return keys.emplace(node.get(), std::make_pair(std::move(name), part)).first->second;
  }
};

// python's int64 reading of an unsigned saved value (values.int64)
py::object signed_int(py::handle v) {
  if (PyBool_Check(v.ptr()) || !PyLong_Check(v.ptr())) return py::reinterpret_borrow<py::object>(v);
  int overflow = 0;
  PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow <= 0) return py::reinterpret_borrow<py::object>(v);
  unsigned long long u = PyLong_AsUnsignedLongLong(v.ptr());
  if (PyErr_Occurred()) { PyErr_Clear(); return py::reinterpret_borrow<py::object>(v); }
  return py::int_((long long)u);
}

bool plain_number(PyObject* v) { return PyBool_Check(v) || PyLong_Check(v) || PyFloat_Check(v); }

// values.small_attr: plain JSON data, or None for anything else. A sequence comes back as a
// tuple (Python's is a list): tuples of numbers are not tracked by Python's garbage
// collector, lists are, and a few hundred kept per step made every full collection longer;
// the trace is built with lists (engine.py, merge)
py::object small_attr(py::handle v) {
  PyObject* o = v.ptr();
  if (o == Py_None || plain_number(o) || PyUnicode_Check(o)) return signed_int(v);
  if (PyTuple_CheckExact(o) && PyTuple_GET_SIZE(o) <= kMaxPreview) {   // sizes, strides: kept as they are
    bool plain = true;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o) && plain; ++i) {
      PyObject* x = PyTuple_GET_ITEM(o, i);
      int overflow = 0;
      plain = PyFloat_Check(x) || PyBool_Check(x) || (PyLong_Check(x) && (PyLong_AsLongLongAndOverflow(x, &overflow), overflow == 0));
    }
    if (PyErr_Occurred()) PyErr_Clear();
    if (plain) return py::reinterpret_borrow<py::object>(v);
  }
  if (PyTuple_Check(o) || PyList_Check(o)) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(v);
    size_t n = py::len(seq);
    if ((int)n > kMaxPreview) return py::none();
    py::tuple out(n);
    for (size_t i = 0; i < n; ++i) {
      py::object x = seq[i];
      if (!plain_number(x.ptr())) return py::none();
      out[i] = signed_int(x);
    }
    return std::move(out);
  }
  return py::none();
}

const NodeFields& fields_of(py::handle pynode, py::handle describe) {
  auto it = g_graph->fields.find(Py_TYPE(pynode.ptr()));
  if (it != g_graph->fields.end()) return it->second;
  py::tuple both = describe(pynode);   // Graph._slot_fields and _attr_fields, read from dir()
  NodeFields f;
  for (auto name : py::tuple(both[0])) {
    std::string n = name.cast<std::string>();
    f.slots.emplace_back(py::str("_raw_saved_" + n), n);
  }
  for (auto name : py::tuple(both[1])) {
    std::string n = name.cast<std::string>();
    f.attrs.emplace_back(py::str("_saved_" + n), py::str(n));
  }
  return g_graph->fields.emplace(Py_TYPE(pynode.ptr()), std::move(f)).first->second;
}

py::object get_attr_or_null(py::handle obj, py::handle name) {
  PyObject* v = PyObject_GetAttr(obj.ptr(), name.ptr());
  if (v == nullptr) {
    PyErr_Clear();   // released already, or not readable from Python: left out, as in graph.py
    return py::object();
  }
  return py::reinterpret_steal<py::object>(v);
}

// the saved slots of a node: ours recorded here, the others (checkpoint's, save_on_cpu's, a
// wrapped number) handed to Python as (node id, field label, the SavedTensor)
void slots_of(py::handle pynode, const NodeFields& f, int64_t nid, int64_t t, int64_t serial, py::list& theirs) {
  static py::str data_name("data");
  for (const auto& [attr, field] : f.slots) {
    py::object raw = get_attr_or_null(pynode, attr);
    if (!raw) continue;
    bool many = PyList_Check(raw.ptr()) || PyTuple_Check(raw.ptr());
    py::list items;
    if (many) {
      for (auto x : raw) items.append(x);
    } else {
      items.append(raw);
    }
    for (size_t i = 0; i < py::len(items); ++i) {
      py::object saved = items[i];
      if (saved.is_none()) continue;
      std::string label = (!many && py::len(items) == 1) ? field : field + "[" + std::to_string(i) + "]";
      py::object data = get_attr_or_null(saved, data_name);
      if (!data) continue;
      if (is_packed(data.ptr())) {
        g_graph->slots.push_back({t, serial, reinterpret_cast<PackedObject*>(data.ptr())->pid, nid, std::move(label)});
      } else {
        theirs.append(py::make_tuple(nid, label, saved));
      }
    }
  }
}

// (field, value) pairs, a tuple for the reason small_attr gives
py::tuple attrs_of(py::handle pynode, const NodeFields& f) {
  auto out = py::reinterpret_steal<py::tuple>(PyTuple_New((Py_ssize_t)f.attrs.size()));
  if (!out) throw py::error_already_set();
  Py_ssize_t n = 0;
  for (const auto& [attr, field] : f.attrs) {
    py::object v = get_attr_or_null(pynode, attr);
    if (!v) continue;
    py::object value = small_attr(v);
    PyObject* pair = PyTuple_Pack(2, field.ptr(), value.ptr());
    if (pair == nullptr) throw py::error_already_set();
    PyTuple_SET_ITEM(out.ptr(), n++, pair);
  }
  if (n == (Py_ssize_t)f.attrs.size()) return out;
  return py::reinterpret_steal<py::tuple>(PyTuple_GetSlice(out.ptr(), 0, n));   // some were not readable
}

void push_roots(py::list roots, std::vector<NodePtr>& stack) {
  for (auto obj : roots) {
    if (obj.is_none()) continue;
    try {
      const NodePtr& fn = tensor_of(obj).grad_fn();
      if (fn) stack.push_back(fn);
    } catch (const c10::Error&) {   // a view torch refuses to give a grad_fn for (graph.grad_fn_of)
    }
  }
}

// the nodes not seen yet that the grad_fns of ``roots`` (tensors) reach, recorded here in the
// order graph.py records them (exported at stop); returns the slots that are not ours
py::list discover(py::list roots, py::object see, py::object describe) {
  TORCH_CHECK(g_rec != nullptr && g_graph != nullptr, "gradmem's native recorder is not running");
  Walk walk{see, {}};
  std::vector<NodePtr> stack;
  push_roots(roots, stack);
  std::vector<std::pair<int64_t, NodePtr>> fresh;
  while (!stack.empty()) {
    NodePtr node = std::move(stack.back());
    stack.pop_back();
    const auto& k = walk.key(node);
    if (g_graph->ids.count(k)) continue;
    int64_t nid = g_graph->next_nid++;
    g_graph->ids.emplace(k, nid);
    fresh.emplace_back(nid, node);
    for (const auto& e : node->next_edges())
      if (e.function) stack.push_back(e.function);
  }
  int64_t t = now_ns(), serial;
  {
    std::lock_guard<std::recursive_mutex> g(g_rec->mu);
    serial = current_serial_locked(*g_rec);
  }
  py::list theirs;
  for (auto it = fresh.rbegin(); it != fresh.rend(); ++it) {
    const NodePtr& node = it->second;
    const auto& k = walk.key(node);
    NodeRec rec{t, serial, it->first, k.first, k.second, {}, py::object()};
    for (const auto& e : node->next_edges())
      rec.next.emplace_back(e.function ? g_graph->ids.at(walk.key(e.function)) : -1, e.input_nr);
    std::type_index cls(typeid(*node));
    auto known = g_graph->by_class.find(cls);
    if (known == g_graph->by_class.end() || !known->second->slots.empty() || !known->second->attrs.empty()) {
      py::object pynode = py::reinterpret_steal<py::object>(torch::autograd::functionToPyObject(node));
      const NodeFields& f = fields_of(pynode, describe);
      if (!python_node(*node)) g_graph->by_class.emplace(cls, &f);
      py::tuple attrs = attrs_of(pynode, f);
      if (py::len(attrs) > 0) rec.attrs = std::move(attrs);
      slots_of(pynode, f, it->first, t, serial, theirs);
    }
    g_graph->nodes.push_back(std::move(rec));
  }
  return theirs;
}

// gradmem's id of the node with this key, if the walk met it (None: not yet)
py::object node_id(const std::string& name, py::object part) {
  if (g_graph == nullptr) return py::none();
  // a sequence number is unsigned: a custom Function's (torch.compile's) may pass INT64_MAX;
  // the walk keeps it as the same 64 bits, signed
  int64_t n = part.is_none() ? kNoStorage : static_cast<int64_t>(PyLong_AsUnsignedLongLongMask(part.ptr()));
  auto it = g_graph->ids.find({name, n});
  return it == g_graph->ids.end() ? py::object(py::none()) : py::object(py::int_(it->second));
}

// a backward call's leaf: its gradient watched (its AccumulateGrad node's end records it),
// and whether Python is to record its facts (the first time its storage is met: a leaf's
// facts never change)
bool watch_and_hand_over(torch::autograd::AccumulateGrad* acc, py::handle see) {
  if (g_rec == nullptr || g_graph == nullptr) return true;
  const at::Tensor& leaf = acc->variable;
  int64_t sid = storage_id(leaf, see);
  if (sid == kNoStorage) return true;
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  g_rec->leaves.insert_or_assign(acc, LeafWatch{WeakImpl(leaf.getIntrusivePtr()), sid});
  return g_rec->leaf_sids_given.insert(sid).second;
}

// the leaves (AccumulateGrad variables) the grad_fns of ``roots`` reach, in graph.py's order;
// ``watch`` (a backward call): each one's gradient is watched, and only the leaves whose
// facts Python has not recorded yet are returned
py::list leaves(py::list roots, py::object see, bool watch) {
  std::vector<NodePtr> stack;
  push_roots(roots, stack);
  std::unordered_set<const torch::autograd::Node*> seen;
  py::list out;
  while (!stack.empty()) {
    NodePtr node = std::move(stack.back());
    stack.pop_back();
    if (!seen.insert(node.get()).second) continue;
    if (auto* acc = dynamic_cast<torch::autograd::AccumulateGrad*>(node.get())) {
      if (!watch || watch_and_hand_over(acc, see))
        out.append(py::reinterpret_steal<py::object>(THPVariable_Wrap(acc->variable)));
    }
    for (const auto& e : node->next_edges())
      if (e.function) stack.push_back(e.function);
  }
  return out;
}

// -- resident memory ---------------------------------------------------------------------------
// Sampled on a thread of our own that never takes the GIL: resident.py's Python thread
// (psutil every 10 ms) made the program's thread hand the GIL over a hundred times a
// second, in the middle of backward's hooks.

// the resident bytes psutil reports on Linux (/proc/self/statm's resident pages); -1 when unreadable
int64_t resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = 0;
  int n = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return n == 2 ? (int64_t)resident * (int64_t)sysconf(_SC_PAGESIZE) : -1;
}

void sample_rss(Recorder& r) {
  int64_t rss = resident_bytes();
  if (rss < 0) return;
  std::lock_guard<std::recursive_mutex> g(r.mu);
  r.ref(r.last_serial);   // the step in progress, as Recorder.emit stamps a Python sample
  r.rss.push_back({now_ns(), r.last_serial, rss});
}

struct RssThread {
  std::thread thread;
  std::mutex m;
  std::condition_variable cv;
  bool stopping = false;

  RssThread(Recorder& r, int64_t every_ms) {
    sample_rss(r);
    thread = std::thread([this, &r, every_ms] {
      std::unique_lock<std::mutex> lk(m);
      while (!cv.wait_for(lk, std::chrono::milliseconds(every_ms), [this] { return stopping; })) {
        lk.unlock();
        sample_rss(r);
        lk.lock();
      }
    });
  }

  void stop(Recorder& r) {
    {
      std::lock_guard<std::mutex> lk(m);
      stopping = true;
    }
    cv.notify_all();
    thread.join();
    sample_rss(r);
  }
};

// -- the Python interface ----------------------------------------------------------------------
struct Session {
  Recorder rec;
  std::shared_ptr<State> state;
  at::CallbackHandle fn_handle = 0;
  std::atomic<int64_t> next_sid;
  std::unique_ptr<RssThread> rss;

  explicit Session(int64_t first_sid) : next_sid(first_sid) { rec.next_sid = &next_sid; }
};

Session* g_session = nullptr;

void start(int64_t first_sid, bool want_inputs, int64_t rss_every_ms, std::vector<std::string> source_skip,
           py::object see) {
  TORCH_CHECK(g_session == nullptr, "gradmem's native recorder is already running");
  TORCH_CHECK(c10::ThreadLocalDebugInfo::get(c10::DebugInfoKind::PROFILER_STATE) == nullptr,
              "another profiler is running");
  g_session = new Session(first_sid);
  g_rec = &g_session->rec;
  g_rec->want_inputs = want_inputs;
  g_rec->src.skip = std::move(source_skip);   // empty: no source lines (attribution off)
  if (!see.is_none()) g_rec->see = std::move(see);
  g_session->state = std::make_shared<State>();
  g_graph = new GraphState();
  g_state = g_session->state.get();
  c10::ThreadLocalDebugInfo::_push(c10::DebugInfoKind::PROFILER_STATE, g_session->state);
  g_session->fn_handle = at::addGlobalCallback(
      at::RecordFunctionCallback(on_enter, on_exit).needsInputs(want_inputs).needsOutputs(true).scopes(
          {at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  if (rss_every_ms > 0) g_session->rss = std::make_unique<RssThread>(g_session->rec, rss_every_ms);
}

// a stopped capture's record, kept in C++ until the trace is built (engine.py: merge), so
// that leaving the capture's block makes no Python object per event
struct Record {
  std::unique_ptr<Session> session;
  std::unique_ptr<GraphState> graph;
  py::dict take();
};

Record stop() {
  TORCH_CHECK(g_session != nullptr, "gradmem's native recorder is not running");
  if (g_session->rss) g_session->rss->stop(g_session->rec);   // joined before the recorder goes
  at::removeCallback(g_session->fn_handle);
  auto top = c10::ThreadLocalDebugInfo::_peek(c10::DebugInfoKind::PROFILER_STATE);
  if (top.get() == g_session->state.get()) c10::ThreadLocalDebugInfo::_pop(c10::DebugInfoKind::PROFILER_STATE);
  Recorder& r = g_session->rec;
  {
    std::lock_guard<std::recursive_mutex> g(r.mu);   // a callback still running elsewhere finishes first
    g_rec = nullptr;
    g_state = nullptr;
  }
  frames().clear();
  SavedHooks* hooks = g_saved;
  g_saved = nullptr;   // a Packed released from now on records nothing
  delete hooks;
  g_foreign_ids.clear();   // their ids are this capture's
  Record rec;
  rec.session.reset(g_session);
  rec.graph.reset(g_graph);
  g_session = nullptr;
  g_graph = nullptr;
  return rec;
}

// the record as Python data, once (the C++ copy is freed)
py::dict Record::take() {
  TORCH_CHECK(session != nullptr, "gradmem's native record was taken already");
  Recorder& r = session->rec;
  py::dict out;
  if (graph) {
    py::list nodes, slots, node_ids;
    for (auto& n : graph->nodes) {
      py::list next;
      for (const auto& [child, nr] : n.next)
        next.append(py::make_tuple(child >= 0 ? py::object(py::int_(child)) : py::object(py::none()), nr));
      nodes.append(py::make_tuple(n.t, n.serial, n.nid, n.name, py_int64(n.part), py::tuple(next),
                                  n.attrs ? n.attrs : py::object(py::none())));
    }
    for (const auto& sl : graph->slots) slots.append(py::make_tuple(sl.t, sl.serial, sl.pack, sl.nid, sl.field));
    for (const auto& [key, nid] : graph->ids) node_ids.append(py::make_tuple(key.first, py_int64(key.second), nid));
    out["nodes"] = nodes;
    out["slots"] = slots;
    out["node_ids"] = node_ids;
  }
  graph.reset();   // its cached attribute names are Python objects: dropped with the GIL held
  py::list ops;
  for (const auto& o : r.ops) ops.append(py::make_tuple(o.shortn, o.full, o.composite, o.factory, o.evaluate));
  out["ops"] = ops;
  py::list steps;
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const Step& s = r.steps[i];
    if (s.referenced) steps.append(py::make_tuple(i, s.t, s.op, s.kind, s.seq_nr, s.backward, s.label));
  }
  out["steps"] = steps;
  py::list allocs;
  for (const auto& a : r.allocs) {
    if (!a.claimed) continue;
    allocs.append(py::make_tuple(a.sid, a.t, a.serial, a.nbytes, (uintptr_t)a.ptr, a.device_type, a.device_index,
                                 a.dtype, py::tuple(py::cast(a.shape)), a.claim_op, a.factory, a.grad_args,
                                 a.value, a.t_free, a.serial_free, a.recompute));
  }
  out["allocs"] = allocs;
  py::list allocator;
  for (const auto& e : r.allocator)
    allocator.append(py::make_tuple(e.t, e.serial, (uintptr_t)e.ptr, e.nbytes, e.total, e.device_type));
  out["allocator"] = allocator;
  py::list nodes;
  for (const auto& e : r.node_ends)
    nodes.append(py::make_tuple(e.t, e.serial, py::tuple(py::cast(e.grads_in)), py::tuple(py::cast(e.grads_out)),
                                py::tuple(py::cast(e.values_in)), py::tuple(py::cast(e.values_out))));
  out["node_ends"] = nodes;
  py::list facts;
  for (const auto& f : r.facts)
    facts.append(py::make_tuple(f.t, f.serial, f.sid, f.seq, f.output_nr, f.node));
  out["facts"] = facts;
  py::list leaf_events;
  for (const auto& e : r.leaf_events)
    leaf_events.append(py::make_tuple(e.t, e.serial, e.target, e.has_in, e.grad_in, py::tuple(py::cast(e.shape_in)),
                                      e.has_grad, e.grad, py::tuple(py::cast(e.shape)), e.value));
  out["leaf_events"] = leaf_events;
  py::list op_nodes;
  for (const auto& o : r.op_nodes) op_nodes.append(py::make_tuple(o.t, o.serial, o.lo, o.hi));
  out["op_nodes"] = op_nodes;
  py::list packs;
  for (const auto& p : r.packs)
    packs.append(py::make_tuple(p.t, p.serial, p.pid, p.sid, py::tuple(py::cast(p.shape)),
                                p.has_stride ? py::object(py::tuple(py::cast(p.stride))) : py::object(py::none()),
                                dtype_name(p.dtype), p.numel, p.element_size, p.value, p.checkpoint));
  out["packs"] = packs;
  py::list unpacks, releases;
  for (const auto& u : r.unpacks) unpacks.append(py::make_tuple(u.t, u.serial, u.pid, u.node_serial));
  for (const auto& u : r.releases) releases.append(py::make_tuple(u.t, u.serial, u.pid));
  out["unpacks"] = unpacks;
  out["releases"] = releases;
  py::list modules;
  for (const auto& m : r.modules)
    modules.append(py::make_tuple(m.t, m.serial, m.exit, r.module_paths[m.path], py::tuple(py::cast(m.outputs))));
  out["modules"] = modules;
  py::list grad_names;
  for (const auto& n : r.grad_names)
    grad_names.append(py::make_tuple(n.t, n.serial, n.sid, r.param_names[n.name], py::tuple(py::cast(n.shape))));
  out["grad_names"] = grad_names;
  py::list rss;
  for (const auto& e : r.rss) rss.append(py::make_tuple(e.t, e.serial, e.rss));
  out["rss"] = rss;
  py::list sources;
  py::tuple nowhere = py::make_tuple(py::none(), py::none(), py::none());
  for (const auto& e : r.sources)
    sources.append(py::make_tuple(e.t, e.serial, e.place >= 0 ? r.src.places[e.place] : nowhere));
  out["sources"] = sources;
  out["next_sid"] = session->next_sid.load();
  session.reset();
  return out;
}

// the step Python's events belong to (marked so that it is exported)
int64_t current_step() {
  if (g_rec == nullptr) return -1;
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  return current_serial_locked(*g_rec);
}

// (steps so far, events so far) for a progress line: what the trace will hold, roughly
py::tuple progress() {
  if (g_rec == nullptr) return py::make_tuple(0, 0);
  Recorder& r = *g_rec;
  std::lock_guard<std::recursive_mutex> g(r.mu);
  size_t events = (size_t)r.referenced + 2 * r.allocs.size() + r.allocator.size() + r.node_ends.size() +
                  r.facts.size() + r.packs.size() + r.unpacks.size() + r.releases.size() + r.modules.size();
  return py::make_tuple(r.referenced, events);
}

int64_t begin_step(const std::string& label, int32_t backward) {
  TORCH_CHECK(g_rec != nullptr, "gradmem's native recorder is not running");
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  g_rec->backward = backward;
  int64_t s = g_rec->new_step(-1, 2, -1);
  g_rec->steps[s].label = label;
  g_rec->ref(s);
  return s;
}

void set_backward(int32_t backward, bool create_graph) {
  if (g_rec == nullptr) return;
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  g_rec->backward = backward;
  g_rec->create_graph = create_graph;
}

// the tensors still alive among ``refs``, as Python objects (``keep``: the dead ones are
// dropped from ``refs``, the live ones stay; else ``refs`` is emptied)
py::list wrap_live(std::vector<WeakImpl>& refs, bool keep) {
  std::vector<at::Tensor> alive;
  std::vector<WeakImpl> still;
  for (auto& w : refs) {
    auto p = w.lock();
    if (!p) continue;
    if (keep) still.push_back(w);
    alive.emplace_back(std::move(p));
  }
  refs.swap(still);
  py::list out;
  for (const auto& t : alive) out.append(py::reinterpret_steal<py::object>(THPVariable_Wrap(t)));
  return out;
}

// what Python takes over at a backward call and at the capture's end: the live tensors it
// should hook (non-leaf outputs with a fact) and those it should record facts for itself
py::tuple flush() {
  TORCH_CHECK(g_rec != nullptr, "gradmem's native recorder is not running");
  std::vector<WeakImpl> outs, foreign;
  size_t copied;
  {
    std::lock_guard<std::recursive_mutex> g(g_rec->mu);
    outs = g_rec->outputs;
    copied = outs.size();
    foreign.swap(g_rec->foreign_new);
    for (auto it = g_rec->foreign.begin(); it != g_rec->foreign.end();)
      it = it->second.expired() ? g_rec->foreign.erase(it) : std::next(it);
  }
  // wrapped without the lock: making or dropping a Python object may free a tensor
  py::list live = wrap_live(outs, true);
  py::list theirs = wrap_live(foreign, false);
  {
    std::lock_guard<std::recursive_mutex> g(g_rec->mu);   // the dead ones go; any appended meanwhile stay
    auto& now = g_rec->outputs;
    outs.insert(outs.end(), now.begin() + (long)std::min(copied, now.size()), now.end());
    now.swap(outs);
  }
  return py::make_tuple(live, theirs);
}

// the storage id of a claimed allocation at this address; 0 when none is live there, -1
// when one is live but nothing claimed it yet (then Python calls claim() with its facts)
int64_t known(uintptr_t ptr) {
  if (g_rec == nullptr || ptr == 0) return 0;
  std::lock_guard<std::recursive_mutex> g(g_rec->mu);
  const Alloc* a = live_at(*g_rec, (void*)ptr);
  if (a == nullptr) return 0;
  return a->claimed ? a->sid : -1;
}

// the leaf gradients recorded with no storage id (not allocations of the capture), still
// alive: (event index, 0 for the arriving gradient or 1 for the .grad, the tensor)
py::list unnamed_leaf_grads() {
  TORCH_CHECK(g_rec != nullptr, "gradmem's native recorder is not running");
  std::vector<std::tuple<size_t, int, at::Tensor>> alive;
  {
    std::lock_guard<std::recursive_mutex> g(g_rec->mu);
    for (size_t i = g_rec->leaf_named; i < g_rec->leaf_events.size(); ++i) {
      auto& e = g_rec->leaf_events[i];
      for (int k = 0; k < 2; ++k) {
        auto& ref = k == 0 ? e.in_ref : e.grad_ref;
        if (!ref) continue;
        auto p = ref->lock();
        ref.reset();
        if (p) alive.emplace_back(i, k, at::Tensor(std::move(p)));
      }
    }
    g_rec->leaf_named = g_rec->leaf_events.size();
  }
  py::list out;
  for (const auto& [i, k, t] : alive)
    out.append(py::make_tuple(i, k, py::reinterpret_steal<py::object>(THPVariable_Wrap(t))));
  return out;
}

int64_t new_id() {
  TORCH_CHECK(g_session != nullptr, "gradmem's native recorder is not running");
  return g_session->next_sid.fetch_add(1);
}

bool running() { return g_session != nullptr; }

// Python's own work on this thread (a value read in a hook) is not the program's: its ops
// are left out of the record, as the Python engine's dispatch mode leaves them out
bool set_busy(bool on) {
  bool was = t_busy;
  t_busy = on;
  return was;
}

}  // namespace

namespace {

// -- entry points called per saved tensor and per module call --------------------------------
// Plain CPython functions, not pybind's m.def: pybind's dispatcher (overload resolution and
// argument casters) cost more than the work itself at a few thousand calls per step.
template <typename F>
PyObject* guarded(F&& f) {
  try {
    return f().release().ptr();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* raw_pack_saved(PyObject*, PyObject* obj) { return guarded([&] { return pack_saved(obj); }); }

PyObject* raw_unpack_saved(PyObject*, PyObject* obj) { return guarded([&] { return unpack_saved(obj); }); }

PyObject* raw_module_enter(PyObject*, PyObject* path) {
  return guarded([&] { module_enter(path); return py::none(); });
}

PyObject* raw_module_exit(PyObject*, PyObject* const* args, Py_ssize_t n) {
  if (n != 3) {
    PyErr_SetString(PyExc_TypeError, "module_exit(see, path, output)");
    return nullptr;
  }
  return guarded([&] { module_exit(py::reinterpret_borrow<py::object>(args[0]), args[1], args[2]); return py::none(); });
}

// -- nn.Module._call_impl, wrapped (modules.py's ModuleWatcher) ------------------------------
// The wrapper modules.py's _wrap_call makes, in C: a module already named goes straight to
// the recorder's enter and exit (no Python frame per module call); one seen for the first
// time, or any failure, goes the Python way (the watcher's _pre and _post).
struct ModuleCall {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *original, *pre, *post, *enter, *exit, *by_id, *stack, *watcher, *fail;
};

PyObject* g_on_name = nullptr;   // "_on", interned

// the path of a module the watcher named (borrowed), or nullptr: modules.py's _Paths.get
PyObject* named_path(ModuleCall* mc, PyObject* module) {
  PyObject* key = PyLong_FromVoidPtr(module);
  if (key == nullptr) return nullptr;
  PyObject* entry = PyDict_GetItemWithError(mc->by_id, key);   // borrowed
  Py_DECREF(key);
  if (entry == nullptr || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) return nullptr;
  PyObject* ref = PyTuple_GET_ITEM(entry, 0);
  if (!PyWeakref_Check(ref) || PyWeakref_GetObject(ref) != module) return nullptr;
  return PyTuple_GET_ITEM(entry, 1);
}

// a failure of ours in a module hook: said once by the watcher (_fail), never raised. As in
// modules.py, which catches Exception only, a KeyboardInterrupt or SystemExit is left set to
// reach the program (false: the caller returns it)
bool hook_failed(ModuleCall* mc) {
  if (!PyErr_ExceptionMatches(PyExc_Exception)) return false;
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  PyObject* r = value != nullptr ? PyObject_CallOneArg(mc->fail, value) : nullptr;
  Py_XDECREF(r);
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  return true;
}

// a call of the watcher's own (its _pre, _post, the recorder's enter and exit); false: an
// error to propagate (hook_failed)
bool call_ignoring(ModuleCall* mc, PyObject* fn, PyObject* a, PyObject* b) {
  PyObject* args[2] = {a, b};
  PyObject* r = PyObject_Vectorcall(fn, args, b == nullptr ? 1 : 2, nullptr);
  if (r == nullptr) return hook_failed(mc);
  Py_DECREF(r);
  return true;
}

// the span's end: the stack unwound to this module, then exit(path, output); false: an
// error to propagate (hook_failed)
bool end_span(ModuleCall* mc, PyObject* path, PyObject* output) {
  int in = PySequence_Contains(mc->stack, path);
  if (in < 0) return hook_failed(mc);
  while (in == 1 && PyList_GET_SIZE(mc->stack) > 0) {
    Py_ssize_t last = PyList_GET_SIZE(mc->stack) - 1;
    PyObject* top = PyList_GET_ITEM(mc->stack, last);
    Py_INCREF(top);
    if (PyList_SetSlice(mc->stack, last, last + 1, nullptr) < 0) {
      Py_DECREF(top);
      return hook_failed(mc);
    }
    int same = PyObject_RichCompareBool(top, path, Py_EQ);
    Py_DECREF(top);
    if (same != 0) break;
  }
  return call_ignoring(mc, mc->exit, path, output);
}

PyObject* module_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  auto* mc = reinterpret_cast<ModuleCall*>(self);
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  PyObject* on = n > 0 ? PyObject_GetAttr(mc->watcher, g_on_name) : nullptr;
  int truth = on != nullptr ? PyObject_IsTrue(on) : 0;
  Py_XDECREF(on);
  if (truth <= 0) {   // not recording (or no module given): torch's own call
    PyErr_Clear();
    return PyObject_Vectorcall(mc->original, args, nargsf, kwnames);
  }
  PyObject* module = args[0];
  PyObject* path = named_path(mc, module);
  bool ok = path != nullptr || !PyErr_Occurred() || hook_failed(mc);
  Py_XINCREF(path);
  if (ok && path != nullptr) {
    ok = PyList_Append(mc->stack, path) == 0 ? call_ignoring(mc, mc->enter, path, nullptr) : hook_failed(mc);
  } else if (ok) {
    ok = call_ignoring(mc, mc->pre, module, nullptr);
  }
  if (!ok) {   // a KeyboardInterrupt in our hook: the program's, before its forward
    Py_XDECREF(path);
    return nullptr;
  }
  PyObject* result = PyObject_Vectorcall(mc->original, args, nargsf, kwnames);
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  if (result == nullptr) PyErr_Fetch(&type, &value, &tb);   // the forward raised: its span closes all the same
  PyObject* output = result != nullptr ? result : Py_None;
  ok = path != nullptr ? end_span(mc, path, output) : call_ignoring(mc, mc->post, module, output);
  Py_XDECREF(path);
  if (!ok) {   // as modules.py: an interrupt in the span's end replaces what the forward gave
    Py_XDECREF(result);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return nullptr;
  }
  if (result == nullptr) PyErr_Restore(type, value, tb);
  return result;
}

PyObject* module_call_get(PyObject* self, PyObject* obj, PyObject*) {   // a method: binds the module
  if (obj == nullptr || obj == Py_None) {
    Py_INCREF(self);
    return self;
  }
  return PyMethod_New(self, obj);
}

void module_call_dealloc(PyObject* self) {
  auto* mc = reinterpret_cast<ModuleCall*>(self);
  PyObject_GC_UnTrack(self);
  Py_CLEAR(mc->original); Py_CLEAR(mc->pre); Py_CLEAR(mc->post); Py_CLEAR(mc->enter); Py_CLEAR(mc->exit);
  Py_CLEAR(mc->by_id); Py_CLEAR(mc->stack); Py_CLEAR(mc->watcher); Py_CLEAR(mc->fail);
  PyObject_GC_Del(self);
}

int module_call_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* mc = reinterpret_cast<ModuleCall*>(self);
  Py_VISIT(mc->original); Py_VISIT(mc->pre); Py_VISIT(mc->post); Py_VISIT(mc->enter); Py_VISIT(mc->exit);
  Py_VISIT(mc->by_id); Py_VISIT(mc->stack); Py_VISIT(mc->watcher); Py_VISIT(mc->fail);
  return 0;
}

PyTypeObject ModuleCallType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// module_call(original, pre, post, enter, exit, by_id, stack, watcher, fail): the wrapper
PyObject* raw_module_call(PyObject*, PyObject* const* args, Py_ssize_t n) {
  if (n != 9 || !PyDict_Check(args[5]) || !PyList_Check(args[6])) {
    PyErr_SetString(PyExc_TypeError, "module_call(original, pre, post, enter, exit, by_id: dict, stack: list, watcher, fail)");
    return nullptr;
  }
  auto* mc = PyObject_GC_New(ModuleCall, &ModuleCallType);
  if (mc == nullptr) return nullptr;
  mc->vectorcall = module_call;
  PyObject** fields[] = {&mc->original, &mc->pre, &mc->post, &mc->enter, &mc->exit, &mc->by_id, &mc->stack,
                         &mc->watcher, &mc->fail};
  for (int i = 0; i < 9; ++i) {
    Py_INCREF(args[i]);
    *fields[i] = args[i];
  }
  PyObject_GC_Track(mc);
  return reinterpret_cast<PyObject*>(mc);
}

void add_module_call_type(py::module_& m) {
  g_on_name = PyUnicode_InternFromString("_on");
  ModuleCallType.tp_name = "gradmem_native.ModuleCall";
  ModuleCallType.tp_basicsize = sizeof(ModuleCall);
  ModuleCallType.tp_dealloc = module_call_dealloc;
  ModuleCallType.tp_traverse = module_call_traverse;
  ModuleCallType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  ModuleCallType.tp_vectorcall_offset = offsetof(ModuleCall, vectorcall);
  ModuleCallType.tp_call = PyVectorcall_Call;
  ModuleCallType.tp_descr_get = module_call_get;
  ModuleCallType.tp_doc = "nn.Module._call_impl with gradmem's module span around it";
  if (PyType_Ready(&ModuleCallType) < 0) throw py::error_already_set();
}

PyMethodDef kRawMethods[] = {
    {"pack_saved", raw_pack_saved, METH_O, "the pack hook: a tensor saved for backward"},
    {"unpack_saved", raw_unpack_saved, METH_O, "the unpack hook"},
    {"module_enter", raw_module_enter, METH_O, "a module call begins (its path)"},
    {"module_exit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(raw_module_exit)), METH_FASTCALL,
     "a module call ends (see, path, output)"},
    {"module_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(raw_module_call)), METH_FASTCALL,
     "module_call(original, pre, post, enter, exit, by_id, stack, watcher, fail): Module._call_impl wrapped"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gradmem's native capture: op frames and allocations recorded in C++";
  m.def("start", &start, py::arg("first_sid"), py::arg("want_inputs") = true, py::arg("rss_every_ms") = 0,
        py::arg("source_skip") = std::vector<std::string>(), py::arg("see") = py::none());
  m.def("resident_bytes", &resident_bytes);
  py::class_<Record>(m, "Record").def("take", &Record::take);
  m.def("stop", &stop);
  m.def("current_step", &current_step);
  m.def("begin_step", &begin_step);
  m.def("progress", &progress);
  m.def("set_backward", &set_backward);
  m.def("claim", &claim);
  m.def("new_id", &new_id);
  m.def("flush", &flush);
  m.def("known", &known);
  m.def("unnamed_leaf_grads", &unnamed_leaf_grads);
  m.def("running", &running);
  m.def("set_busy", &set_busy);
  add_packed_type(m);
  add_module_call_type(m);
  check_tensor_layout();
  m.def("hook_saved", &hook_saved);
  m.def("pause_saved", &pause_saved);
  m.def("resume_saved", &resume_saved);
  m.def("new_pid", &new_pid);
  m.def("discover", &discover);
  m.def("leaves", &leaves);
  m.def("node_id", &node_id);
  m.def("watch_params", &watch_params);
  m.def("name_grads", &name_grads);
  if (PyModule_AddFunctions(m.ptr(), kRawMethods) < 0) throw py::error_already_set();
}
