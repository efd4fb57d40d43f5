#include "backend/device.h"

namespace swiftlet {

Tensor Device::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0f);
  return t;
}

}  // namespace swiftlet
