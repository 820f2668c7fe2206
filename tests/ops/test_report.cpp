// The loader report's op rows: each op plugin lists the ops it implements (porta_ops.h names
// without "porta_"), so that tools can tell which ops run on a vendor library and which fall back
// to the portable plugin under PORTA_OPS=vendor.
#include <porta/porta_op_table.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <set>
#include <sstream>

#include "ops_test.h"

namespace {

// Every op of the table, by the name its row gives it (porta_ops.h's without "porta_").
#define PORTA_TEST_OP_NAME_(name, fields) #name,
const std::set<std::string> kAllOps = {PORTA_OP_TABLE(PORTA_TEST_OP_NAME_)};
#undef PORTA_TEST_OP_NAME_

std::set<std::string> split(const std::string& list) {
  std::set<std::string> names;
  std::stringstream stream(list);
  std::string name;
  while (std::getline(stream, name, ',')) names.insert(name);
  return names;
}

// The loaded op plugin row of that name, if any.
bool find_row(const std::string& name, porta_plugin_report_t& out) {
  size_t count = 0;
  PT_REQUIRE_OK(porta_loader_report_count(&count));
  for (size_t i = 0; i < count; ++i) {
    porta_plugin_report_t row;
    std::memset(&row, 0, sizeof row);
    row.struct_size = sizeof row;
    PT_REQUIRE_OK(porta_loader_report_get(i, &row));
    if (row.kind == PORTA_PLUGIN_KIND_OPS && name == row.name &&
        row.outcome == PORTA_PLUGIN_LOADED) {
      out = row;
      return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("report: the op plugin in use lists the ops it implements", "[report]") {
  const char* backend = nullptr;
  PT_REQUIRE_OK(porta_backend_selected(&backend));
  const char* ops = std::getenv("PORTA_OPS");
  const bool vendor = ops && std::string(ops) == "vendor";
  const std::string name = vendor ? "vendor_" + std::string(backend) : "portable";
  porta_plugin_report_t row;
  REQUIRE(find_row(name, row));  // main() ran an op through it
  INFO(name << " lists: " << row.ops);
  CHECK(row.version[0] != '\0');
  const std::set<std::string> listed = split(row.ops);
  CHECK_FALSE(listed.empty());
  for (const std::string& op : listed) {
    INFO(op);
    CHECK(kAllOps.count(op) == 1);  // a porta_ops.h name, listed once
  }
  CHECK(std::count(row.ops, row.ops + std::strlen(row.ops), ',') + 1 ==
        static_cast<std::ptrdiff_t>(listed.size()));
  if (!vendor) CHECK(listed == kAllOps);

  if (vendor && std::string(backend) == "cpu") {
    // oneDNN and OpenBLAS serve these; the rest run on the portable plugin.
    const std::set<std::string> expected = {"gemm",
                                            "conv2d_forward",
                                            "conv2d_backward_data",
                                            "conv2d_backward_weights",
                                            "softmax_forward",
                                            "softmax_backward",
                                            "bias_add",
                                            "bias_backward",
                                            "relu_forward",
                                            "relu_backward"};
    CHECK(listed == expected);
    const std::string version = row.version;
    CHECK(version.find("oneDNN") != std::string::npos);
    CHECK(version.find("OpenBLAS") != std::string::npos);
    // The ops it leaves out still run (on the portable plugin); their results are checked by the
    // rest of the suite, which runs in full under PORTA_OPS=vendor.
    porta_plugin_report_t portable;
    REQUIRE(find_row("portable", portable));
    for (const std::string& op : kAllOps) {
      if (!listed.count(op)) CHECK(split(portable.ops).count(op) == 1);
    }
  }
}
