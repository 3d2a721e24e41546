// Test stub of the Arduino core functions main.cc uses (declarations only).
#ifndef ROVERLITE_STUB_ARDUINO_H_
#define ROVERLITE_STUB_ARDUINO_H_
unsigned long micros();
void delay(unsigned long ms);
struct HardwareSerial {
  void begin(unsigned long baud);
};
extern HardwareSerial Serial;
#endif
