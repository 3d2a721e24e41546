// roverlite on a microcontroller: segment the generated test image with TFLite-Micro and print
// the pixel count of every class, next to the counts TFLite-Micro produced on the workstation.
//
// Needs, on the include path, the files `roverlite export --format c_array` writes into
// <out>/<name>_c_array/: model_data.h, model_data.cc (compile it), model_ops.h, test_image.h.
// Build recipes (ESP-IDF, Arduino, generic Cortex-M / host with a TFLite-Micro tree): README.md.
//
// Entry points: app_main() under ESP-IDF, setup()/loop() under Arduino, main() elsewhere (the
// host and bare-metal builds run the image a few times and return 0 when every run matches).

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(ARDUINO) && defined(__has_include)
#if __has_include(<TensorFlowLite.h>)
#include <TensorFlowLite.h>  // umbrella header of the Arduino_TensorFlowLite library
#endif
#endif

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "model_data.h"
#include "model_ops.h"
#include "test_image.h"

#if defined(ESP_PLATFORM)
#include "esp_heap_caps.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#elif defined(ARDUINO)
#include <Arduino.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <chrono>
#endif

static_assert(sizeof(roverlite::kExpectedClassCounts) / sizeof(roverlite::kExpectedClassCounts[0]) ==
                  static_cast<size_t>(roverlite::kNumClasses),
              "test_image.h and model_data.h come from different exports");
static_assert(roverlite::kTestImageBytes ==
                  roverlite::kInputHeight * roverlite::kInputWidth * roverlite::kInputChannels,
              "test_image.h does not match the model's input size");

namespace {

constexpr int kHostRuns = 3;

// The tensor arena: TFLite-Micro never allocates from the heap, everything lives here. 16-byte
// alignment is what TFLite-Micro's allocator wants. On an ESP32-S3 whose internal RAM is short,
// define ROVERLITE_ARENA_IN_PSRAM to take it from PSRAM instead (slower memory, same results).
#if defined(ESP_PLATFORM) && defined(ROVERLITE_ARENA_IN_PSRAM)
uint8_t* g_tensor_arena = nullptr;
#else
alignas(16) uint8_t g_tensor_arena[roverlite::kTensorArenaSize];
#endif

tflite::MicroInterpreter* g_interpreter = nullptr;
int g_run = 0;

// Microseconds from a free-running clock, or 0 where the platform has none wired up (bare-metal
// Cortex-M: read the DWT cycle counter here and divide by the core clock in MHz).
uint64_t NowMicros() {
#if defined(ESP_PLATFORM)
  return static_cast<uint64_t>(esp_timer_get_time());
#elif defined(ARDUINO)
  return static_cast<uint64_t>(micros());
#elif defined(__unix__) || defined(__APPLE__)
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
#else
  return 0;
#endif
}

// Maps the model, registers exactly its ops and allocates its tensors. False on any failure,
// with the reason printed.
bool Setup() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("model schema version %d, this TFLite-Micro reads %d", static_cast<int>(model->version()),
                TFLITE_SCHEMA_VERSION);
    return false;
  }

  static roverlite::ModelOpResolver resolver;
  if (roverlite::RegisterModelOps(resolver) != kTfLiteOk) {
    MicroPrintf("registering the model's %d ops failed", static_cast<int>(roverlite::kModelOpCount));
    return false;
  }

#if defined(ESP_PLATFORM) && defined(ROVERLITE_ARENA_IN_PSRAM)
  g_tensor_arena = static_cast<uint8_t*>(
      heap_caps_aligned_alloc(16, roverlite::kTensorArenaSize, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT));
  if (g_tensor_arena == nullptr) {
    MicroPrintf("no %u bytes of PSRAM for the tensor arena", static_cast<unsigned>(roverlite::kTensorArenaSize));
    return false;
  }
#endif

  static tflite::MicroInterpreter interpreter(model, resolver, g_tensor_arena, roverlite::kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors() failed: kTensorArenaSize (%u bytes) too small for this build's kernels?",
                static_cast<unsigned>(roverlite::kTensorArenaSize));
    return false;
  }

  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  const size_t pixels = static_cast<size_t>(roverlite::kInputHeight) * roverlite::kInputWidth;
  if (input->type != kTfLiteInt8 || input->bytes != static_cast<size_t>(roverlite::kTestImageBytes)) {
    MicroPrintf("input tensor is not int8 [1, %d, %d, %d]", roverlite::kInputHeight, roverlite::kInputWidth,
                roverlite::kInputChannels);
    return false;
  }
  if (output->type != kTfLiteInt8 || output->bytes != pixels * roverlite::kNumClasses) {
    MicroPrintf("output tensor is not int8 [1, %d, %d, %d]", roverlite::kInputHeight, roverlite::kInputWidth,
                roverlite::kNumClasses);
    return false;
  }
  MicroPrintf("roverlite: arena %u of %u bytes used (host measured %u)",
              static_cast<unsigned>(interpreter.arena_used_bytes()),
              static_cast<unsigned>(roverlite::kTensorArenaSize),
              static_cast<unsigned>(roverlite::kTensorArenaMeasuredBytes));
  g_interpreter = &interpreter;
  return true;
}

// One inference on the test image. True when every class count equals the workstation's.
bool RunOnce() {
  TfLiteTensor* input = g_interpreter->input(0);
  std::memcpy(input->data.int8, roverlite::kTestImage, sizeof(roverlite::kTestImage));

  const uint64_t start = NowMicros();
  if (g_interpreter->Invoke() != kTfLiteOk) {
    MicroPrintf("Invoke() failed");
    return false;
  }
  const unsigned elapsed_us = static_cast<unsigned>(NowMicros() - start);

  // The class of a pixel is the argmax of its int8 logits; ties go to the lower class id, as in
  // numpy's argmax on the workstation.
  const int8_t* logits = g_interpreter->output(0)->data.int8;
  int counts[roverlite::kNumClasses] = {0};
  const int pixels = roverlite::kInputHeight * roverlite::kInputWidth;
  for (int p = 0; p < pixels; ++p) {
    const int8_t* values = logits + p * roverlite::kNumClasses;
    int best = 0;
    for (int k = 1; k < roverlite::kNumClasses; ++k) {
      if (values[k] > values[best]) best = k;
    }
    ++counts[best];
  }

  bool match = true;
  MicroPrintf("run %d on %s: invoke %u us", g_run, roverlite::kTestImageId, elapsed_us);
  for (int k = 0; k < roverlite::kNumClasses; ++k) {
    MicroPrintf("  %s: %d pixels (workstation: %d)", roverlite::kClassNames[k], counts[k],
                roverlite::kExpectedClassCounts[k]);
    match = match && counts[k] == roverlite::kExpectedClassCounts[k];
  }
  MicroPrintf("run %d: %s", g_run, match ? "MATCH" : "MISMATCH");
  ++g_run;
  return match;
}

}  // namespace

#if defined(ESP_PLATFORM)
extern "C" void app_main(void) {
  if (!Setup()) return;
  while (true) {
    RunOnce();
    vTaskDelay(pdMS_TO_TICKS(1000));
  }
}
#elif defined(ARDUINO)
void setup() {
  Serial.begin(115200);
  Setup();  // on failure g_interpreter stays null and loop() only waits
}

void loop() {
  if (g_interpreter != nullptr) RunOnce();
  delay(1000);
}
#else
int main() {
  if (!Setup()) return 1;
  bool all_match = true;
  for (int i = 0; i < kHostRuns; ++i) all_match = RunOnce() && all_match;
  return all_match ? 0 : 2;
}
#endif
