/*
 * Declarations of the few spinnaker_tools (spin1 API, SARK) and
 * SpiNNFrontEndCommon (data specification, simulation) entry points that the
 * kernel bindings use, written for this project from the published
 * signatures of spinnaker_tools and front-end-common 7.4.x.
 *
 * Only for type-checking the bindings (tools/arm_build_check.py) when the
 * real SDK is absent: nothing here is implemented, so an object compiled
 * against it cannot be linked into an .aplx. A real build defines
 * SPINN_REAL_SDK and includes <spin1_api.h>, <data_specification.h> and
 * <simulation.h> instead (see spin1_binding.h). Keep every signature exactly
 * as in those headers; values are the SDK's.
 */
#ifndef SPIN1_API_DECLS_H
#define SPIN1_API_DECLS_H

#ifdef SPINN_REAL_SDK
#error "spin1_api_decls.h is for builds without the SDK; use the real headers"
#endif

#include <stdbool.h>
#include <stdint.h>

/* spinnaker.h / common-typedefs.h */
typedef unsigned int uint;
typedef uint32_t *address_t;

/* spin1_api.h: results, events, payload flag, callbacks */
#define SUCCESS ((uint)1)
#define FAILURE ((uint)0)
enum {
    MC_PACKET_RECEIVED = 0,
    DMA_TRANSFER_DONE = 1,
    TIMER_TICK = 2,
    SDP_PACKET_RX = 3,
    USER_EVENT = 4,
    MCPL_PACKET_RECEIVED = 5
};
enum { NO_PAYLOAD = 0, WITH_PAYLOAD = 1 };
typedef void (*callback_t)(uint, uint);

void spin1_callback_on(uint event_id, callback_t cback, int priority);
void spin1_callback_off(uint event_id);
void spin1_set_timer_tick(uint time);
uint spin1_trigger_user_event(uint arg0, uint arg1);
uint spin1_send_mc_packet(uint key, uint data, uint load); /* static inline in the SDK */
void *spin1_malloc(uint bytes);                            /* static inline: sark_alloc(bytes, 1) */
void spin1_delay_us(uint n);                               /* static inline: sark_delay_us(n) */
uint spin1_fiq_disable(void);                              /* returns the old CPSR */
void spin1_mode_restore(uint value);

/* sark.h: run-time error codes (enum rte_code_e) and the fatal-error exit */
enum { RTE_MALLOC = 10, RTE_SWERR = 13 };
__attribute__((noreturn)) void rt_error(uint code, ...);

/* data_specification.h: the region table at the start of the core's SDRAM */
typedef struct region_desc_t {
    void *pointer;
    uint32_t checksum; /* 32-bit wrapping sum of the region's words */
    uint32_t n_words;  /* words written by the data-spec loader */
} region_desc_t;

typedef struct data_specification_metadata_t {
    uint32_t magic_number;
    uint32_t version;
    region_desc_t regions[];
} data_specification_metadata_t;

data_specification_metadata_t *data_specification_get_data_address(void);
bool data_specification_read_header(data_specification_metadata_t *ds_regions);
void *data_specification_get_region(uint32_t region, data_specification_metadata_t *ds_regions);

/* simulation.h */
typedef void (*prov_callback_t)(address_t);
typedef void (*resume_callback_t)(void);
typedef void (*exit_callback_t)(void);

bool simulation_initialise(address_t address, uint32_t expected_application_magic_number,
                           uint32_t *timer_period, uint32_t *simulation_ticks_pointer,
                           uint32_t *infinite_run_pointer, uint32_t *time_pointer,
                           int sdp_packet_callback_priority, int dma_transfer_complete_priority);
void simulation_set_uses_timer(bool sim_uses_timer);
void simulation_run(void);
void simulation_set_provenance_function(prov_callback_t provenance_function, address_t provenance_data_address);
void simulation_set_exit_function(exit_callback_t exit_function);
bool simulation_is_finished(void);
void simulation_handle_pause_resume(resume_callback_t callback);
void simulation_ready_to_read(void);

#endif /* SPIN1_API_DECLS_H */
