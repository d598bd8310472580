#include "kb_image_codecs.h"
#include "buffer.h"

#include <setjmp.h>
#include <stdio.h>
#include <png.h>

/* libpng reports fatal errors through a callback that must not return; ours records
   the message and longjmps to the setjmp in the wrapper (png_jmpbuf). */
typedef struct {
    char *message;
    int truncated;
} error_state;

static void on_error(png_structp png, png_const_charp text) {
    error_state *state = png_get_error_ptr(png);
    if (state->message[0] == 0) snprintf(state->message, KB_IMAGE_MESSAGE_LENGTH, "%s", text);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp text) { (void)png; (void)text; }

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t position;
} memory_source;

static void read_bytes(png_structp png, png_bytep out, size_t count) {
    memory_source *source = png_get_io_ptr(png);
    if (source->size - source->position < count) {
        error_state *state = png_get_error_ptr(png);
        state->truncated = 1;
        png_error(png, "the file ends before the image data does");
    }
    memcpy(out, source->data + source->position, count);
    source->position += count;
}

static char *copy_string(const char *text) {
    size_t length = strlen(text);
    char *copy = malloc(length + 1);
    if (copy) memcpy(copy, text, length + 1);
    return copy;
}

static void collect_text(png_structp png, png_infop info, kb_png_text_list *texts) {
    png_textp items = NULL;
    int count = 0;
    png_get_text(png, info, &items, &count);
    if (count <= 0) return;
    texts->items = calloc((size_t)count, sizeof(kb_png_text));
    if (!texts->items) return;
    for (int i = 0; i < count; i++) {
        kb_png_text *t = &texts->items[texts->count];
        t->key = copy_string(items[i].key);
        t->value = copy_string(items[i].text ? items[i].text : "");
        t->utf8 = items[i].compression >= PNG_ITXT_COMPRESSION_NONE;
        if (!t->key || !t->value) {
            free(t->key);
            free(t->value);
            continue;
        }
        texts->count++;
    }
}

kb_image_status kb_png_decode(const uint8_t *data, size_t size, kb_image *out, kb_png_text_list *texts) {
    memset(out, 0, sizeof *out);
    if (texts) memset(texts, 0, sizeof *texts);
    error_state errors = {out->message, 0};
    memory_source source = {data, size, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &errors, on_error, on_warning);
    if (!png) return KB_IMAGE_NO_MEMORY;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return KB_IMAGE_NO_MEMORY;
    }
    uint8_t *volatile rgba = NULL;
    png_bytep *volatile rows = NULL;
    uint8_t *volatile pixels = NULL;
    if (setjmp(png_jmpbuf(png))) {
        kb_image_status status = ((volatile error_state *)&errors)->truncated ? KB_IMAGE_TRUNCATED : KB_IMAGE_CORRUPT;
        png_destroy_read_struct(&png, &info, NULL);
        free(rgba);
        free(rows);
        free(pixels);
        return status;
    }
    png_set_read_fn(png, &source, read_bytes);
    png_read_info(png, info);

    png_uint_32 width, height;
    int depth, color_type, interlace;
    png_get_IHDR(png, info, &width, &height, &depth, &color_type, &interlace, NULL, NULL);
    out->source_components = color_type;
    out->bit_depth = depth;
    out->interlaced = interlace != PNG_INTERLACE_NONE;
    if ((long long)width * height > KB_IMAGE_MAX_PIXELS) {
        snprintf(out->message, KB_IMAGE_MESSAGE_LENGTH, "%ux%u pixels", width, height);
        out->width = (int)width;
        out->height = (int)height;
        png_destroy_read_struct(&png, &info, NULL);
        return KB_IMAGE_TOO_LARGE;
    }

    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    /* Keep the high byte of 16-bit samples, as Pillow's 16-bit RGB/RGBA/LA readers do. */
    if (depth == 16) png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if ((channels != 3 && channels != 4) || row_bytes != (size_t)width * (size_t)channels) {
        snprintf(out->message, KB_IMAGE_MESSAGE_LENGTH, "unexpected layout after expansion (%d channels)", channels);
        png_destroy_read_struct(&png, &info, NULL);
        return KB_IMAGE_CORRUPT;
    }
    rgba = malloc(row_bytes * height);
    rows = malloc(sizeof(png_bytep) * height);
    pixels = channels == 4 ? malloc((size_t)width * height * 3) : NULL;
    if (!rgba || !rows || (channels == 4 && !pixels)) {
        snprintf(out->message, KB_IMAGE_MESSAGE_LENGTH, "out of memory for %ux%u pixels", width, height);
        png_destroy_read_struct(&png, &info, NULL);
        free(rgba);
        free(rows);
        free(pixels);
        return KB_IMAGE_NO_MEMORY;
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = rgba + y * row_bytes;
    png_read_image(png, rows);

    /* The pixels are complete: a file cut off after its image data (or with a broken
       trailing chunk) still decodes; only text chunks after IDAT are lost. */
    if (setjmp(png_jmpbuf(png)) == 0) {
        png_read_end(png, info);
    }
    out->message[0] = 0;
    if (texts) collect_text(png, info, texts);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);

    if (channels == 4) {
        /* Composite on white: c*a/255 + 255*(1 - a/255), rounded (Pillow's alpha_composite
           on an opaque white background gives the same integers). */
        size_t n = (size_t)width * height;
        for (size_t i = 0; i < n; i++) {
            unsigned a = rgba[4 * i + 3];
            for (int c = 0; c < 3; c++) pixels[3 * i + c] = (uint8_t)((rgba[4 * i + c] * a + 255 * (255 - a) + 127) / 255);
        }
        free(rgba);
        out->pixels = pixels;
    } else {
        out->pixels = rgba;
    }
    out->width = (int)width;
    out->height = (int)height;
    return KB_IMAGE_OK;
}

static void write_bytes(png_structp png, png_bytep data, size_t count) {
    kb_growable *buffer = png_get_io_ptr(png);
    if (!kb_growable_reserve(buffer, count)) png_error(png, "out of memory");
    memcpy(buffer->data + buffer->size, data, count);
    buffer->size += count;
}

static void flush_bytes(png_structp png) { (void)png; }

kb_image_status kb_png_encode(const uint8_t *rgb, int width, int height, int compression_level,
                              const kb_png_text_in *texts, int text_count, kb_buffer *out) {
    memset(out, 0, sizeof *out);
    error_state errors = {out->message, 0};
    kb_growable buffer = {NULL, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &errors, on_error, on_warning);
    if (!png) return KB_IMAGE_NO_MEMORY;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return KB_IMAGE_NO_MEMORY;
    }
    png_textp volatile items = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(items);
        free(((volatile kb_growable *)&buffer)->data);
        return KB_IMAGE_CORRUPT;
    }
    png_set_write_fn(png, &buffer, write_bytes, flush_bytes);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, compression_level < 0 ? 0 : compression_level > 9 ? 9 : compression_level);
    if (text_count > 0) {
        items = calloc((size_t)text_count, sizeof(png_text));
        if (!items) png_error(png, "out of memory");
        for (int i = 0; i < text_count; i++) {
            items[i].compression = texts[i].utf8 ? PNG_ITXT_COMPRESSION_NONE : PNG_TEXT_COMPRESSION_NONE;
            items[i].key = (png_charp)texts[i].key;
            items[i].text = (png_charp)texts[i].value;
            items[i].text_length = strlen(texts[i].value);
        }
        png_set_text(png, info, items, text_count);  /* copies the strings */
    }
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(items);
    out->data = buffer.data;
    out->size = buffer.size;
    return KB_IMAGE_OK;
}

void kb_png_text_free(kb_png_text_list *texts) {
    for (int i = 0; i < texts->count; i++) {
        free(texts->items[i].key);
        free(texts->items[i].value);
    }
    free(texts->items);
    texts->items = NULL;
    texts->count = 0;
}
