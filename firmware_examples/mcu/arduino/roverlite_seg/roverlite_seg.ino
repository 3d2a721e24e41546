// roverlite TFLite-Micro example as an Arduino sketch.
//
// setup() and loop() live in main.cc. Copy into this folder, next to this file:
//   ../../main.cc
//   model_data.cc, model_data.h, model_ops.h, test_image.h   (from roverlite export --format c_array)
// and install a TFLite-Micro library for your board (see ../../README.md). Serial runs at 115200.
