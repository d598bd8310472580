#ifndef KB_IMAGE_CODECS_H
#define KB_IMAGE_CODECS_H
#include <stddef.h>
#include <stdint.h>

/* C wrappers around libjpeg and libpng. Both libraries report fatal errors through a
   callback that must not return; these wrappers catch them with setjmp/longjmp
   (which Swift cannot do) and turn them into status codes with a message.
   The public types here are plain C so Swift never sees libjpeg/libpng headers. */

typedef enum {
    KB_IMAGE_OK = 0,
    KB_IMAGE_CORRUPT = 1,   /* the library rejected the data */
    KB_IMAGE_TRUNCATED = 2, /* the data ended before the image did */
    KB_IMAGE_NO_MEMORY = 3,
    KB_IMAGE_TOO_LARGE = 4, /* more pixels than kb_image_max_pixels */
} kb_image_status;

/* Decompression-bomb guard: the same limit Pillow turns into an error. */
#define KB_IMAGE_MAX_PIXELS 178956970LL

#define KB_IMAGE_MESSAGE_LENGTH 256

/* A decoded image: 8-bit RGB, interleaved, rows top to bottom, no padding.
   `pixels` is malloc'ed; release it with kb_image_free. */
typedef struct {
    int width;
    int height;
    uint8_t *pixels;
    /* JPEG: colour space of the file (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK). PNG: libpng
       colour type. Informational. */
    int source_components;
    int progressive;  /* JPEG only */
    int interlaced;   /* PNG only */
    int bit_depth;    /* PNG only */
    char message[KB_IMAGE_MESSAGE_LENGTH];
} kb_image;

/* A text chunk read from a PNG. For tEXt/zTXt the strings hold Latin-1 bytes,
   for iTXt UTF-8 (utf8 = 1). NUL-terminated, malloc'ed. */
typedef struct {
    char *key;
    char *value;
    int utf8;
} kb_png_text;

typedef struct {
    kb_png_text *items;
    int count;
} kb_png_text_list;

/* A text chunk to write. `key` is Latin-1 (1-79 bytes), `value` NUL-free bytes:
   Latin-1 when utf8 = 0 (tEXt), UTF-8 when utf8 = 1 (iTXt). */
typedef struct {
    const char *key;
    const char *value;
    int utf8;
} kb_png_text_in;

/* An encoded file in memory; release with kb_buffer_free. */
typedef struct {
    uint8_t *data;
    size_t size;
    char message[KB_IMAGE_MESSAGE_LENGTH];
} kb_buffer;

/* Decodes a JPEG to RGB. Grayscale is replicated; CMYK/YCCK is read with Adobe's
   inverted polarity (as Pillow assumes) and converted with R = C'K'/255 etc. */
kb_image_status kb_jpeg_decode(const uint8_t *data, size_t size, kb_image *out);

/* Encodes RGB pixels as a baseline JPEG (4:2:0, quality 1-100). */
kb_image_status kb_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, kb_buffer *out);

/* Decodes any PNG to RGB: palette and low bit depths expanded, 16-bit reduced to its
   high byte, tRNS turned into alpha, alpha composited on white. When `texts` is not
   NULL, the text chunks are returned there (release with kb_png_text_free). */
kb_image_status kb_png_decode(const uint8_t *data, size_t size, kb_image *out, kb_png_text_list *texts);

/* Encodes RGB pixels as an 8-bit PNG with the given text chunks (before IDAT). */
kb_image_status kb_png_encode(const uint8_t *rgb, int width, int height, int compression_level,
                              const kb_png_text_in *texts, int text_count, kb_buffer *out);

void kb_image_free(kb_image *image);
void kb_buffer_free(kb_buffer *buffer);
void kb_png_text_free(kb_png_text_list *texts);

#endif
