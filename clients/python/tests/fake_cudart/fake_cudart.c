/* A stand-in for libcudart with the few entry points reel_client's ctypes backend
 * uses, so its ABI (the 64-byte cudaIpcMemHandle_t passed by value) is tested
 * without a GPU. Built by tests/test_unit.py with the system C compiler. */
#include <stdint.h>
#include <string.h>

typedef struct { char reserved[64]; } cudaIpcMemHandle_t;

static int current_device = 0;
static int device_count = 2;
unsigned char last_handle[64];
unsigned int last_flags = 0xffffffff;
int last_open_device = -1;
int opens = 0;
int closes = 0;
uintptr_t last_closed = 0;

int cudaGetDevice(int *device) { *device = current_device; return 0; }

int cudaSetDevice(int device) {
    if (device < 0 || device >= device_count) return 101; /* cudaErrorInvalidDevice */
    current_device = device;
    return 0;
}

int cudaIpcOpenMemHandle(void **ptr, cudaIpcMemHandle_t handle, unsigned int flags) {
    memcpy(last_handle, handle.reserved, 64);
    last_flags = flags;
    last_open_device = current_device;
    if ((unsigned char)handle.reserved[0] == 0xff) return 400; /* cudaErrorInvalidResourceHandle */
    opens++;
    /* A recognizable address: depends on the first and last handle bytes. */
    *ptr = (void *)(uintptr_t)(0x7f0000000000ULL + ((unsigned char)handle.reserved[0] << 20)
                               + ((unsigned char)handle.reserved[63] << 12));
    return 0;
}

int cudaIpcCloseMemHandle(void *ptr) { closes++; last_closed = (uintptr_t)ptr; return 0; }

const char *cudaGetErrorString(int err) {
    switch (err) {
    case 101: return "invalid device ordinal";
    case 400: return "invalid resource handle";
    default: return "unknown error";
    }
}
