#ifndef KB_BUFFER_INTERNAL_H
#define KB_BUFFER_INTERNAL_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A growable byte buffer the encoders write into. Owning the buffer here (rather
   than using libjpeg's jpeg_mem_dest) lets an error path free it reliably. */
typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
} kb_growable;

/* Makes room for `extra` more bytes; returns 0 when out of memory. */
static inline int kb_growable_reserve(kb_growable *b, size_t extra) {
    if (b->capacity - b->size >= extra) return 1;
    size_t capacity = b->capacity ? b->capacity : 65536;
    while (capacity - b->size < extra) capacity *= 2;
    uint8_t *data = realloc(b->data, capacity);
    if (!data) return 0;
    b->data = data;
    b->capacity = capacity;
    return 1;
}

#endif
