// Test stub of TFLite-Micro's printf-style logger.
#ifndef ROVERLITE_STUB_MICRO_LOG_H_
#define ROVERLITE_STUB_MICRO_LOG_H_
void MicroPrintf(const char* format, ...) __attribute__((format(printf, 1, 2)));
#endif
