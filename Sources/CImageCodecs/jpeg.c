#include "kb_image_codecs.h"
#include "buffer.h"

#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>
#include <jerror.h>

/* See the plausibility check in kb_jpeg_decode. */
#define KB_JPEG_MAX_PIXELS_PER_BYTE 1024
#define KB_JPEG_PLAUSIBLE_FLOOR (16LL << 20)

/* libjpeg's default error_exit calls exit(); ours records the message and jumps back
   to the wrapper. */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *message;
    int truncated;
} error_state;

static void on_error_exit(j_common_ptr cinfo) {
    error_state *state = (error_state *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(state->message, KB_IMAGE_MESSAGE_LENGTH, "%s", text);
    longjmp(state->jump, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level) {
    error_state *state = (error_state *)cinfo->err;
    if (level >= 0) return;  /* trace output */
    cinfo->err->num_warnings++;
    switch (cinfo->err->msg_code) {
    /* Harmless: markers libjpeg does not trust, or bytes it skipped between segments
       (a decoder that needed them reports JWRN_HIT_MARKER first). */
    case JWRN_ADOBE_XFORM:
    case JWRN_JFIF_MAJOR:
    case JWRN_BOGUS_ICC:
    case JWRN_EXTRANEOUS_DATA:
        return;
    /* libjpeg treats running out of data as a warning and pads the image with gray;
       Pillow (and we) refuse such a file rather than train on a half-gray photo. Like
       Pillow, this includes a file that lacks only its end marker. */
    case JWRN_JPEG_EOF:
        state->truncated = 1;
        on_error_exit(cinfo);
        return;
    /* Every other warning is corrupt entropy data (a premature end of a segment, a bad
       Huffman code, a broken progression): libjpeg would carry on and fill the rest of
       the picture with gray or garbage, which must not become a training photo. */
    default:
        on_error_exit(cinfo);
    }
}

static void on_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void install_errors(error_state *state, char *message) {
    jpeg_std_error(&state->pub);
    state->pub.error_exit = on_error_exit;
    state->pub.emit_message = on_emit_message;
    state->pub.output_message = on_output_message;
    state->message = message;
    state->truncated = 0;
}

static void convert_row(const uint8_t *in, uint8_t *out, size_t width, int components) {
    switch (components) {
    case 1:
        for (size_t x = 0; x < width; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
        break;
    case 3:
        memcpy(out, in, width * 3);
        break;
    case 4:
        /* Adobe stores CMYK inverted, so the samples are 255-C, 255-M, 255-Y, 255-K and
           R = (255-C)(255-K)/255, rounded (exactly what Pillow's CMYK->RGB gives). */
        for (size_t x = 0; x < width; x++) {
            unsigned k = in[4 * x + 3];
            for (int c = 0; c < 3; c++) out[3 * x + c] = (uint8_t)((in[4 * x + c] * k + 127) / 255);
        }
        break;
    }
}

kb_image_status kb_jpeg_decode(const uint8_t *data, size_t size, kb_image *out) {
    memset(out, 0, sizeof *out);
    struct jpeg_decompress_struct cinfo;
    error_state errors;
    uint8_t *volatile pixels = NULL;
    uint8_t *volatile row = NULL;

    cinfo.err = &errors.pub;
    install_errors(&errors, out->message);
    if (setjmp(errors.jump)) {
        kb_image_status status = ((volatile error_state *)&errors)->truncated ? KB_IMAGE_TRUNCATED : KB_IMAGE_CORRUPT;
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(row);
        return status;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);

    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK:
    case JCS_YCCK: cinfo.out_color_space = JCS_CMYK; break;
    default: cinfo.out_color_space = JCS_RGB; break;
    }
    out->source_components = cinfo.num_components;
    out->progressive = cinfo.progressive_mode ? 1 : 0;
    long long claimed = (long long)cinfo.image_width * cinfo.image_height;
    if (claimed > KB_IMAGE_MAX_PIXELS) {
        snprintf(out->message, KB_IMAGE_MESSAGE_LENGTH, "%ux%u pixels", cinfo.image_width, cinfo.image_height);
        out->width = (int)cinfo.image_width;
        out->height = (int)cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        return KB_IMAGE_TOO_LARGE;
    }

    /* Before allocating: Huffman coding spends at least one bit per 8x8 block, so a
       real JPEG holds at most 512 pixels per byte; a header claiming far more than
       its data can hold (13000x13000 over a 320x320 file) is refused before libjpeg
       allocates for it. Small pictures are exempt (arithmetic coding packs tighter). */
    if (claimed > KB_JPEG_PLAUSIBLE_FLOOR && claimed / KB_JPEG_MAX_PIXELS_PER_BYTE > (long long)size) {
        snprintf(out->message, KB_IMAGE_MESSAGE_LENGTH, "its header claims %ux%u pixels, more than %zu bytes of data can hold",
                 cinfo.image_width, cinfo.image_height, size);
        jpeg_destroy_decompress(&cinfo);
        return KB_IMAGE_CORRUPT;
    }

    jpeg_start_decompress(&cinfo);
    size_t width = cinfo.output_width, height = cinfo.output_height;
    int components = cinfo.output_components;
    pixels = malloc(width * height * 3);
    row = malloc(width * (size_t)components);
    if (!pixels || !row) {
        snprintf(out->message, KB_IMAGE_MESSAGE_LENGTH, "out of memory for %zux%zu pixels", width, height);
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(row);
        return KB_IMAGE_NO_MEMORY;
    }
    while (cinfo.output_scanline < height) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) break;  /* cannot happen with a memory source */
        convert_row(row, pixels + y * width * 3, width, components);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    out->width = (int)width;
    out->height = (int)height;
    out->pixels = pixels;
    return KB_IMAGE_OK;
}

typedef struct {
    struct jpeg_destination_mgr pub;
    kb_growable buffer;
} memory_destination;

static void destination_init(j_compress_ptr cinfo) {
    memory_destination *dest = (memory_destination *)cinfo->dest;
    if (!kb_growable_reserve(&dest->buffer, 65536)) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
    dest->pub.next_output_byte = dest->buffer.data;
    dest->pub.free_in_buffer = dest->buffer.capacity;
}

static boolean destination_empty(j_compress_ptr cinfo) {
    memory_destination *dest = (memory_destination *)cinfo->dest;
    /* libjpeg calls this only when the whole buffer is full. */
    dest->buffer.size = dest->buffer.capacity;
    if (!kb_growable_reserve(&dest->buffer, dest->buffer.capacity)) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 1);
    dest->pub.next_output_byte = dest->buffer.data + dest->buffer.size;
    dest->pub.free_in_buffer = dest->buffer.capacity - dest->buffer.size;
    return TRUE;
}

static void destination_term(j_compress_ptr cinfo) {
    memory_destination *dest = (memory_destination *)cinfo->dest;
    dest->buffer.size = dest->buffer.capacity - dest->pub.free_in_buffer;
}

kb_image_status kb_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, kb_buffer *out) {
    memset(out, 0, sizeof *out);
    struct jpeg_compress_struct cinfo;
    error_state errors;
    memory_destination dest;
    memset(&dest, 0, sizeof dest);

    cinfo.err = &errors.pub;
    install_errors(&errors, out->message);
    if (setjmp(errors.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(((volatile memory_destination *)&dest)->buffer.data);
        return KB_IMAGE_CORRUPT;
    }
    jpeg_create_compress(&cinfo);
    dest.pub.init_destination = destination_init;
    dest.pub.empty_output_buffer = destination_empty;
    dest.pub.term_destination = destination_term;
    cinfo.dest = &dest.pub;
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW rows[1] = {(JSAMPROW)(rgb + (size_t)cinfo.next_scanline * (size_t)width * 3)};
        jpeg_write_scanlines(&cinfo, rows, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    out->data = dest.buffer.data;
    out->size = dest.buffer.size;
    return KB_IMAGE_OK;
}

void kb_image_free(kb_image *image) {
    free(image->pixels);
    image->pixels = NULL;
}

void kb_buffer_free(kb_buffer *buffer) {
    free(buffer->data);
    buffer->data = NULL;
    buffer->size = 0;
}
