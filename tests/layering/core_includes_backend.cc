// Must not compile: core/ is the lowest layer and may not include backend/ (DESIGN.md's one-way
// order). Built only by the Layering.IncludesGoOneWay test, which expects the compiler to find
// core's own header and to miss backend/device.h.
#include "core/tensor.h"
#include "backend/device.h"
