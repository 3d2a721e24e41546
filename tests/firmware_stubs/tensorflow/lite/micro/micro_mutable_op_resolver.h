// Test stub of tflite::MicroMutableOpResolver: the Add* methods (names as in TFLite-Micro's
// micro_mutable_op_resolver.h) an image segmentation model may need.
#ifndef ROVERLITE_STUB_MICRO_MUTABLE_OP_RESOLVER_H_
#define ROVERLITE_STUB_MICRO_MUTABLE_OP_RESOLVER_H_
#include "tensorflow/lite/micro/micro_common.h"

namespace tflite {
class MicroOpResolver {};

template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddAdd();
  TfLiteStatus AddAveragePool2D();
  TfLiteStatus AddConcatenation();
  TfLiteStatus AddConv2D();
  TfLiteStatus AddDepthToSpace();
  TfLiteStatus AddDepthwiseConv2D();
  TfLiteStatus AddDequantize();
  TfLiteStatus AddHardSwish();
  TfLiteStatus AddLeakyRelu();
  TfLiteStatus AddLogistic();
  TfLiteStatus AddMaxPool2D();
  TfLiteStatus AddMean();
  TfLiteStatus AddMul();
  TfLiteStatus AddPad();
  TfLiteStatus AddPadV2();
  TfLiteStatus AddQuantize();
  TfLiteStatus AddRelu();
  TfLiteStatus AddRelu6();
  TfLiteStatus AddReshape();
  TfLiteStatus AddResizeBilinear();
  TfLiteStatus AddResizeNearestNeighbor();
  TfLiteStatus AddSoftmax();
  TfLiteStatus AddSpaceToDepth();
  TfLiteStatus AddStridedSlice();
  TfLiteStatus AddSub();
  TfLiteStatus AddTranspose();
  TfLiteStatus AddTransposeConv();
};
}  // namespace tflite
#endif
