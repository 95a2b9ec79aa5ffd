/* Tests only (src/vp8.rs): decodes VP8 with libvpx's decoder to check what the encoder made.
 * In its own object file, so a binary that never calls it links no decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <vpx/vp8dx.h>
#include <vpx/vpx_decoder.h>

typedef struct gk_vp8_dec {
  vpx_codec_ctx_t ctx;
} gk_vp8_dec;

gk_vp8_dec *gk_vp8_dec_new(void) {
  gk_vp8_dec *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  if (vpx_codec_dec_init(&d->ctx, vpx_codec_vp8_dx(), NULL, 0) != VPX_CODEC_OK) {
    free(d);
    return NULL;
  }
  return d;
}

/* Decodes one frame: 0 with the picture's size and its top-left luma sample, or -1. */
int gk_vp8_dec_frame(gk_vp8_dec *d, const uint8_t *data, size_t len, unsigned *w, unsigned *h,
                     uint8_t *luma00) {
  if (vpx_codec_decode(&d->ctx, data, (unsigned)len, NULL, 0) != VPX_CODEC_OK) return -1;
  vpx_codec_iter_t it = NULL;
  vpx_image_t *img = vpx_codec_get_frame(&d->ctx, &it);
  if (!img) return -1;
  *w = img->d_w;
  *h = img->d_h;
  *luma00 = img->planes[VPX_PLANE_Y][0];
  return 0;
}

void gk_vp8_dec_free(gk_vp8_dec *d) {
  if (d) {
    vpx_codec_destroy(&d->ctx);
    free(d);
  }
}
