// The LLVM pass step between clang and llvm-spirv for SPIR-V kernel libraries (opt-15 loads this
// plugin). Two passes:
//   porta-spirv-internalize (before optimising): everything but the kernels gets internal linkage
//     and is marked always-inline, so that the optimiser inlines it into the kernels. Shared
//     memory declared in a helper then belongs to the kernels that use it: a helper left out of
//     line exports its work-group variables as globals that an OpenCL implementation may share
//     between work-groups running at once.
//   porta-spirv-lower (after optimising): what llvm-spirv-15 or drivers cannot take.
//     - Dynamic shared memory (an external work-group array, CUDA's `extern __shared__`) has no
//       SPIR-V form: each kernel that uses it gets a trailing work-group pointer argument in its
//       place, which the backends size at launch (porta_launch_config_t.shared_memory_bytes).
//     - `freeze` cannot be translated: dropped, as newer translators do.
//     - Blocks must come after their dominators: each function's blocks in reverse post-order.
#include <llvm/ADT/PostOrderIterator.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Instructions.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/PassManager.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Passes/PassPlugin.h>
#include <llvm/Transforms/Utils/Local.h>

#include <vector>

using namespace llvm;

namespace {

constexpr unsigned kWorkgroupAddressSpace = 3;

bool is_kernel(const Function& f) { return f.getCallingConv() == CallingConv::SPIR_KERNEL; }

struct InternalizePass : PassInfoMixin<InternalizePass> {
  PreservedAnalyses run(Module& module, ModuleAnalysisManager&) {
    for (Function& f : module) {
      if (f.isDeclaration() || is_kernel(f)) continue;
      f.setLinkage(GlobalValue::InternalLinkage);
      f.removeFnAttr(Attribute::NoInline);
      f.removeFnAttr(Attribute::OptimizeNone);
      f.addFnAttr(Attribute::AlwaysInline);
    }
    for (GlobalVariable& g : module.globals()) {
      if (!g.isDeclaration()) g.setLinkage(GlobalValue::InternalLinkage);
    }
    return PreservedAnalyses::none();
  }
};

// Replaces the uses of `constant` inside `function` by `value`, turning the constant expressions
// on the way into instructions at the function's entry.
void replace_in_function(Constant* constant, Value* value, Function& function,
                         Instruction* insert_before) {
  std::vector<User*> users(constant->user_begin(), constant->user_end());
  for (User* user : users) {
    if (auto* inst = dyn_cast<Instruction>(user)) {
      if (inst->getFunction() == &function) inst->replaceUsesOfWith(constant, value);
    } else if (auto* expr = dyn_cast<ConstantExpr>(user)) {
      Instruction* as_inst = expr->getAsInstruction(insert_before);
      as_inst->replaceUsesOfWith(constant, value);
      replace_in_function(expr, as_inst, function, insert_before);
      if (as_inst->use_empty()) as_inst->eraseFromParent();
    }
  }
}

bool used_in(const Value* value, const Function& function) {
  for (const User* user : value->users()) {
    if (auto* inst = dyn_cast<Instruction>(user)) {
      if (inst->getFunction() == &function) return true;
    } else if (isa<ConstantExpr>(user) && used_in(user, function)) {
      return true;
    }
  }
  return false;
}

// The kernel again with one more parameter, a work-group i8 pointer; the body moves over.
Function* with_shared_memory_argument(Function& kernel) {
  LLVMContext& context = kernel.getContext();
  FunctionType* type = kernel.getFunctionType();
  std::vector<Type*> params(type->param_begin(), type->param_end());
  params.push_back(Type::getInt8PtrTy(context, kWorkgroupAddressSpace));
  auto* new_type = FunctionType::get(type->getReturnType(), params, false);
  Function* updated = Function::Create(new_type, kernel.getLinkage(), kernel.getAddressSpace(), "",
                                       kernel.getParent());
  updated->copyAttributesFrom(&kernel);
  updated->copyMetadata(&kernel, 0);
  updated->getBasicBlockList().splice(updated->begin(), kernel.getBasicBlockList());
  auto new_arg = updated->arg_begin();
  for (Argument& arg : kernel.args()) {
    arg.replaceAllUsesWith(&*new_arg);
    new_arg->takeName(&arg);
    ++new_arg;
  }
  new_arg->setName("porta_dynamic_shared");
  updated->takeName(&kernel);
  kernel.eraseFromParent();
  return updated;
}

struct LowerPass : PassInfoMixin<LowerPass> {
  PreservedAnalyses run(Module& module, ModuleAnalysisManager&) {
    lower_dynamic_shared_memory(module);
    for (Function& f : module) {
      if (f.isDeclaration()) continue;
      drop_freeze(f);
      order_blocks(f);
    }
    return PreservedAnalyses::none();
  }

  static void lower_dynamic_shared_memory(Module& module) {
    std::vector<GlobalVariable*> dynamic;
    for (GlobalVariable& g : module.globals()) {
      if (g.isDeclaration() && g.getAddressSpace() == kWorkgroupAddressSpace) dynamic.push_back(&g);
    }
    if (dynamic.empty()) return;
    std::vector<Function*> kernels;
    for (Function& f : module) {
      if (f.isDeclaration() || !is_kernel(f)) continue;
      for (GlobalVariable* g : dynamic) {
        if (used_in(g, f)) {
          kernels.push_back(&f);
          break;
        }
      }
    }
    for (Function* kernel : kernels) {
      Function* updated = with_shared_memory_argument(*kernel);
      Argument* memory = updated->getArg(updated->arg_size() - 1);
      Instruction* entry = &*updated->getEntryBlock().getFirstInsertionPt();
      for (GlobalVariable* g : dynamic) {
        if (!used_in(g, *updated)) continue;
        // Every dynamic array of a kernel is the same memory, as in CUDA.
        auto* cast = new BitCastInst(memory, g->getType(), g->getName(), entry);
        replace_in_function(g, cast, *updated, entry);
        drop_array_type(cast, memory);
      }
    }
    for (GlobalVariable* g : dynamic) {
      g->removeDeadConstantUsers();
      if (g->use_empty()) g->eraseFromParent();
    }
  }

  // The array type ([0 x T]) must not survive in a pointer type (SPIR-V has no empty arrays):
  // an address into the array becomes one into T's from the argument, and casts start there.
  static void drop_array_type(BitCastInst* array, Argument* memory) {
    std::vector<User*> users(array->user_begin(), array->user_end());
    for (User* user : users) {
      auto* inst = cast<Instruction>(user);
      if (auto* gep = dyn_cast<GetElementPtrInst>(inst)) {
        auto* first = dyn_cast<ConstantInt>(gep->getOperand(1));
        auto* type = dyn_cast<ArrayType>(gep->getSourceElementType());
        if (!first || !first->isZero() || !type || gep->getNumIndices() < 2) continue;
        Type* element = type->getElementType();
        auto* base =
            new BitCastInst(memory, PointerType::get(element, kWorkgroupAddressSpace), "", gep);
        std::vector<Value*> indices(gep->idx_begin() + 1, gep->idx_end());
        auto* flat = GetElementPtrInst::Create(element, base, indices, gep->getName(), gep);
        flat->setIsInBounds(gep->isInBounds());
        gep->replaceAllUsesWith(flat);
        gep->eraseFromParent();
      } else if (auto* bitcast = dyn_cast<BitCastInst>(inst)) {
        bitcast->setOperand(0, memory);
      } else if (auto* space = dyn_cast<AddrSpaceCastInst>(inst)) {
        auto* type = PointerType::getWithSamePointeeType(cast<PointerType>(space->getDestTy()),
                                                         kWorkgroupAddressSpace);
        auto* bytes = new BitCastInst(memory, type, "", space);
        space->setOperand(0, bytes);
      }
    }
    if (array->use_empty()) array->eraseFromParent();
  }

  static void drop_freeze(Function& f) {
    std::vector<FreezeInst*> freezes;
    for (BasicBlock& block : f) {
      for (Instruction& inst : block) {
        if (auto* freeze = dyn_cast<FreezeInst>(&inst)) freezes.push_back(freeze);
      }
    }
    for (FreezeInst* freeze : freezes) {
      freeze->replaceAllUsesWith(freeze->getOperand(0));
      freeze->eraseFromParent();
    }
  }

  static void order_blocks(Function& f) {
    removeUnreachableBlocks(f);
    ReversePostOrderTraversal<Function*> order(&f);
    BasicBlock* previous = nullptr;
    for (BasicBlock* block : order) {
      if (previous) block->moveAfter(previous);
      previous = block;
    }
  }
};

}  // namespace

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo llvmGetPassPluginInfo() {
  return {LLVM_PLUGIN_API_VERSION, "porta-spirv", "1", [](PassBuilder& builder) {
            builder.registerPipelineParsingCallback([](StringRef name, ModulePassManager& passes,
                                                       ArrayRef<PassBuilder::PipelineElement>) {
              if (name == "porta-spirv-internalize") {
                passes.addPass(InternalizePass());
                return true;
              }
              if (name == "porta-spirv-lower") {
                passes.addPass(LowerPass());
                return true;
              }
              return false;
            });
          }};
}
