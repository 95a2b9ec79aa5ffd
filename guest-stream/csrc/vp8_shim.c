/* The VP8 encoder of guest-stream (src/vp8.rs): a thin shim over libvpx, compiled by build.rs
 * against the installed headers. Rust sees an opaque pointer and a flat struct of ints, never
 * vpx_codec_enc_cfg_t or vpx_image_t, whose layouts change between libvpx releases: the C
 * compiler reads them from whatever libvpx-dev is installed, so no struct is mirrored by hand
 * and no bindgen/libclang is needed at build time.
 *
 * Settings follow what WebRTC's own libvpx VP8 encoder does for real-time screen sharing:
 * one pass CBR, no lag (a frame in, its packet out), error resilient, frame dropping by the
 * rate control, and a cap on keyframe size so a forced keyframe does not stall the stream. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vpx/vp8cx.h>
#include <vpx/vpx_encoder.h>

typedef struct gk_vp8 {
  vpx_codec_ctx_t ctx;
  vpx_codec_enc_cfg_t cfg;
  vpx_codec_iter_t iter;
  char err[256];
} gk_vp8;

/* Mirrored in src/vp8.rs (`ffi::Params`): plain unsigned/int fields only. */
typedef struct gk_vp8_params {
  unsigned width, height;
  unsigned bitrate_kbps;
  unsigned fps;
  unsigned threads;
  int cpu_used;
  unsigned keyframe_interval; /* 0 = only the first frame and requested ones */
  unsigned drop_frame_thresh; /* buffer fullness (%) under which frames are dropped; 0 = never */
  unsigned screen_content;    /* VP8E_SET_SCREEN_CONTENT_MODE: 0, 1, 2 */
  unsigned error_resilient;
} gk_vp8_params;

static void set_err(char *dst, size_t n, const char *what, vpx_codec_ctx_t *ctx, vpx_codec_err_t res) {
  const char *detail = ctx ? vpx_codec_error_detail(ctx) : NULL;
  snprintf(dst, n, "%s: %s%s%s", what, vpx_codec_err_to_string(res), detail ? ": " : "",
           detail ? detail : "");
}

const char *gk_vp8_version(void) { return vpx_codec_version_str(); }

/* A new encoder, or NULL with the reason in err. */
gk_vp8 *gk_vp8_new(const gk_vp8_params *p, char *err, size_t errlen) {
  gk_vp8 *e = calloc(1, sizeof *e);
  if (!e) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  vpx_codec_err_t res = vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &e->cfg, 0);
  if (res != VPX_CODEC_OK) {
    set_err(err, errlen, "vpx_codec_enc_config_default", NULL, res);
    free(e);
    return NULL;
  }
  vpx_codec_enc_cfg_t *c = &e->cfg;
  c->g_w = p->width;
  c->g_h = p->height;
  c->g_timebase.num = 1; /* pts in milliseconds */
  c->g_timebase.den = 1000;
  c->g_threads = p->threads;
  c->g_lag_in_frames = 0;
  c->g_pass = VPX_RC_ONE_PASS;
  c->g_error_resilient = p->error_resilient ? VPX_ERROR_RESILIENT_DEFAULT : 0;
  c->rc_end_usage = VPX_CBR;
  c->rc_target_bitrate = p->bitrate_kbps;
  c->rc_dropframe_thresh = p->drop_frame_thresh;
  c->rc_resize_allowed = 0;
  c->rc_min_quantizer = 2;
  c->rc_max_quantizer = 56;
  c->rc_undershoot_pct = 100;
  c->rc_overshoot_pct = 15;
  c->rc_buf_initial_sz = 500;
  c->rc_buf_optimal_sz = 600;
  c->rc_buf_sz = 1000;
  if (p->keyframe_interval == 0) {
    c->kf_mode = VPX_KF_DISABLED;
  } else {
    c->kf_mode = VPX_KF_AUTO;
    c->kf_min_dist = 0;
    c->kf_max_dist = p->keyframe_interval;
  }
  res = vpx_codec_enc_init(&e->ctx, vpx_codec_vp8_cx(), c, 0);
  if (res != VPX_CODEC_OK) {
    set_err(err, errlen, "vpx_codec_enc_init", &e->ctx, res);
    free(e);
    return NULL;
  }
#define CTRL(id, v)                                 \
  do {                                              \
    vpx_codec_err_t r_ = vpx_codec_control(&e->ctx, id, v); \
    if (r_ != VPX_CODEC_OK) {                       \
      set_err(err, errlen, #id, &e->ctx, r_);       \
      vpx_codec_destroy(&e->ctx);                   \
      free(e);                                      \
      return NULL;                                  \
    }                                               \
  } while (0)
  CTRL(VP8E_SET_CPUUSED, p->cpu_used);
  CTRL(VP8E_SET_NOISE_SENSITIVITY, 0u);
  CTRL(VP8E_SET_STATIC_THRESHOLD, 1u);
  CTRL(VP8E_SET_TOKEN_PARTITIONS, (int)VP8_ONE_TOKENPARTITION);
  CTRL(VP8E_SET_SCREEN_CONTENT_MODE, p->screen_content);
  /* WebRTC's rule: a keyframe may take half the optimal buffer at this frame rate (in % of a
   * frame's average size), so one forced for a new viewer does not stall everyone's stream. */
  CTRL(VP8E_SET_MAX_INTRA_BITRATE_PCT,
       (unsigned)(c->rc_buf_optimal_sz * 0.5 * (p->fps ? p->fps : 30) / 10));
#undef CTRL
  return e;
}

const char *gk_vp8_error(const gk_vp8 *e) { return e->err; }

/* Encodes one I420 frame (real time: VPX_DL_REALTIME); 0, or -1 with gk_vp8_error saying why.
 * Its packets are then read with gk_vp8_next_frame. */
int gk_vp8_encode(gk_vp8 *e, const uint8_t *y, int y_stride, const uint8_t *u, int u_stride,
                  const uint8_t *v, int v_stride, int64_t pts_ms, unsigned long duration_ms,
                  int force_keyframe) {
  vpx_image_t img;
  /* Wraps the caller's planes, no copy: the pointers and strides are set right after. */
  if (!vpx_img_wrap(&img, VPX_IMG_FMT_I420, e->cfg.g_w, e->cfg.g_h, 1, (unsigned char *)y)) {
    snprintf(e->err, sizeof e->err, "vpx_img_wrap failed");
    return -1;
  }
  img.planes[VPX_PLANE_Y] = (unsigned char *)y;
  img.planes[VPX_PLANE_U] = (unsigned char *)u;
  img.planes[VPX_PLANE_V] = (unsigned char *)v;
  img.stride[VPX_PLANE_Y] = y_stride;
  img.stride[VPX_PLANE_U] = u_stride;
  img.stride[VPX_PLANE_V] = v_stride;
  vpx_enc_frame_flags_t flags = force_keyframe ? VPX_EFLAG_FORCE_KF : 0;
  vpx_codec_err_t res = vpx_codec_encode(&e->ctx, &img, pts_ms, duration_ms ? duration_ms : 1,
                                         flags, VPX_DL_REALTIME);
  e->iter = NULL;
  if (res != VPX_CODEC_OK) {
    set_err(e->err, sizeof e->err, "vpx_codec_encode", &e->ctx, res);
    return -1;
  }
  return 0;
}

/* The next compressed frame of the last encode: 1 with data/len/keyframe set, or 0 when none
 * is left (a frame the rate control dropped has none). The data lives until the next call. */
int gk_vp8_next_frame(gk_vp8 *e, const uint8_t **data, size_t *len, int *keyframe) {
  const vpx_codec_cx_pkt_t *pkt;
  while ((pkt = vpx_codec_get_cx_data(&e->ctx, &e->iter)) != NULL) {
    if (pkt->kind == VPX_CODEC_CX_FRAME_PKT) {
      *data = pkt->data.frame.buf;
      *len = pkt->data.frame.sz;
      *keyframe = (pkt->data.frame.flags & VPX_FRAME_IS_KEY) != 0;
      return 1;
    }
  }
  return 0;
}

void gk_vp8_free(gk_vp8 *e) {
  if (e) {
    vpx_codec_destroy(&e->ctx);
    free(e);
  }
}
