/* A shared object that exports the entry point's name as data: calling it would jump into bytes
 * that are no code. */
#include "stub_backend.h"

STUB_EXPORT unsigned char porta_plugin_entry[64] = {0xff, 0xff, 0xff, 0xff};
