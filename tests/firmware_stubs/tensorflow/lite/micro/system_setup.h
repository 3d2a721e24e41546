// Test stub of TFLite-Micro's per-target setup hook.
#ifndef ROVERLITE_STUB_SYSTEM_SETUP_H_
#define ROVERLITE_STUB_SYSTEM_SETUP_H_
namespace tflite {
void InitializeTarget();
}  // namespace tflite
#endif
