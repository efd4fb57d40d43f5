// Must not compile: model/ sits below train/ and may not include it. Built only by the
// Layering.IncludesGoOneWay test, which expects the compiler to find the headers model/ may use and
// to miss train/trainer.h.
#include "model/transformer.h"
#include "ops/linear.h"
#include "train/trainer.h"
