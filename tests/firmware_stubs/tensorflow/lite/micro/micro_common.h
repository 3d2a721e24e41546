// Test stub: the TfLite C types main.cc and the generated headers use.
#ifndef ROVERLITE_STUB_MICRO_COMMON_H_
#define ROVERLITE_STUB_MICRO_COMMON_H_
#include <cstddef>
#include <cstdint>

typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteUInt8 = 3, kTfLiteInt8 = 9 } TfLiteType;
typedef struct TfLiteIntArray { int size; int data[1]; } TfLiteIntArray;
typedef struct TfLiteQuantizationParams { float scale; int32_t zero_point; } TfLiteQuantizationParams;
typedef union TfLitePtrUnion { int32_t* i32; float* f; uint8_t* uint8; int8_t* int8; void* data; } TfLitePtrUnion;
typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  size_t bytes;
} TfLiteTensor;
#endif
