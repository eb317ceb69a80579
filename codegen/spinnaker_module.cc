/*!
 * \file codegen/spinnaker_module.cc
 * \brief TVM runtime module of kind "spinnaker".
 *
 * The module is a thin, serialisable shell around an opaque payload produced by
 * the Python codegen (graph, mapping, region bytes). All real work happens in
 * Python: on the first GetFunction(symbol) -- which is when a Relax VM is
 * created and links the symbol -- it asks the global function
 * `tvm_spinn.runtime.create_executor(symbol, payload, instance_id)` for an
 * executor and forwards every call to it.
 *
 * Only the tvm/ffi headers of the apache-tvm-ffi wheel are used, so
 * this builds against libtvm_ffi.so alone (no TVM source tree needed).
 */
#include <tvm/ffi/cast.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/memory.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

namespace tvm_spinn {

namespace ffi = tvm::ffi;

namespace {

/*! \brief Source of process-unique instance ids (never reused, starts at 1). */
std::atomic<int64_t> next_instance_id{1};

/*! \brief Magic + format version at the start of SaveToBytes output. */
constexpr char kMagic[4] = {'S', 'P', 'N', 'K'};
constexpr uint32_t kFormatVersion = 1;

// Little-endian helpers for the serialisation format:
//   "SPNK" u32:version u64:len symbol u64:len payload
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

class SpinnakerModuleObj final : public ffi::ModuleObj {
 public:
  SpinnakerModuleObj(ffi::String symbol, ffi::Bytes payload)
      : symbol_(std::move(symbol)),
        payload_(std::move(payload)),
        instance_id_(next_instance_id.fetch_add(1)) {}

  const char* kind() const final { return "spinnaker"; }

  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    // Captured by every returned closure so the module outlives the functions.
    ffi::ObjectPtr<ffi::Object> self = ffi::GetObjectPtr<ffi::Object>(this);
    if (name == symbol_) {
      ffi::Function executor = GetOrCreateExecutor();
      return ffi::Function([self, executor](ffi::PackedArgs args, ffi::Any* rv) {
        executor.CallPacked(args, rv);
      });
    }
    if (name == "spinnaker_instance_id") {
      return ffi::Function::FromTyped([self, this]() { return instance_id_; });
    }
    if (name == "spinnaker_symbol") {
      return ffi::Function::FromTyped([self, this]() { return symbol_; });
    }
    if (name == "spinnaker_payload") {
      return ffi::Function::FromTyped([self, this]() { return payload_; });
    }
    return std::nullopt;
  }

  // The default implementation calls GetFunction, which would create the
  // executor as a side effect of a mere lookup (the VM and the import cache
  // probe every imported module).
  bool ImplementsFunction(const ffi::String& name) final {
    return name == symbol_ || name == "spinnaker_instance_id" || name == "spinnaker_symbol" ||
           name == "spinnaker_payload";
  }

  ffi::String InspectSource(const ffi::String& /*format*/) const final {
    return "spinnaker module: symbol=" + std::string(symbol_) +
           " payload_bytes=" + std::to_string(payload_.size()) +
           " instance_id=" + std::to_string(instance_id_);
  }

  ffi::Bytes SaveToBytes() const final {
    std::string out(kMagic, sizeof(kMagic));
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((kFormatVersion >> (8 * i)) & 0xff));
    PutU64(&out, symbol_.size());
    out.append(symbol_.data(), symbol_.size());
    PutU64(&out, payload_.size());
    out.append(payload_.data(), payload_.size());
    return ffi::Bytes(std::move(out));
  }

  static ffi::Module LoadFromBytes(const ffi::Bytes& bytes) {
    const char* p = bytes.data();
    size_t n = bytes.size();
    size_t pos = 0;
    auto need = [&](size_t k) {
      if (n - pos < k) {
        TVM_FFI_THROW(ValueError) << "corrupt spinnaker module: truncated at byte " << pos;
      }
    };
    need(8);
    if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
      TVM_FFI_THROW(ValueError) << "corrupt spinnaker module: bad magic";
    }
    uint32_t version = 0;
    for (int i = 0; i < 4; ++i) version |= static_cast<uint32_t>(static_cast<unsigned char>(p[4 + i])) << (8 * i);
    if (version != kFormatVersion) {
      TVM_FFI_THROW(ValueError) << "spinnaker module format version " << version
                                << " is not supported (expected " << kFormatVersion << ")";
    }
    pos = 8;
    auto read_field = [&]() {
      need(8);
      uint64_t len = GetU64(p + pos);
      pos += 8;
      need(len);
      std::string field(p + pos, len);
      pos += len;
      return field;
    };
    std::string symbol = read_field();
    std::string payload = read_field();
    return Create(symbol, ffi::Bytes(std::move(payload)));
  }

  static ffi::Module Create(const ffi::String& symbol, const ffi::Bytes& payload) {
    if (symbol.size() == 0) TVM_FFI_THROW(ValueError) << "spinnaker module needs a non-empty symbol";
    return ffi::Module(ffi::make_object<SpinnakerModuleObj>(symbol, payload));
  }

 private:
  /*! \brief Create the executor on first use; later calls return the same one. */
  ffi::Function GetOrCreateExecutor() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (executor_.has_value()) return *executor_;
    auto factory = ffi::Function::GetGlobal("tvm_spinn.runtime.create_executor");
    if (!factory.has_value()) {
      TVM_FFI_THROW(RuntimeError)
          << "spinnaker module '" << symbol_
          << "': global function tvm_spinn.runtime.create_executor is not registered; "
             "import tvm_spinn before loading a spinnaker module";
    }
    ffi::Function exec = (*factory)(symbol_, payload_, instance_id_).cast<ffi::Function>();
    executor_ = exec;
    return exec;
  }

  ffi::String symbol_;
  ffi::Bytes payload_;
  int64_t instance_id_;
  std::mutex mutex_;
  ffi::Optional<ffi::Function> executor_;
};

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("tvm_spinn.SpinnakerModuleCreate", SpinnakerModuleObj::Create)
      .def("ffi.Module.load_from_bytes.spinnaker", SpinnakerModuleObj::LoadFromBytes);
}

}  // namespace
}  // namespace tvm_spinn
